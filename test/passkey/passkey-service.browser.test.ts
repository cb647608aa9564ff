import type { Page } from 'playwright-core';
import { BadRequestError } from '../../src/http/errors.js';
import type { AccountWithDevices } from '../../src/persistence/account.repository.js';
import { describeBrowser, useBrowserSuite } from '../support/browser.js';
import { startTestServer, type TestServer } from '../support/harness.js';
import { addVirtualAuthenticator } from '../support/virtual-authenticator.js';

// PasskeyService's ceremonies against Chromium's virtual authenticator: the browser side runs
// @simplewebauthn/browser as the provider serves it, the server side is the service itself.

/** Runs navigator.credentials.create / get in the page through the library the provider serves. */
async function loadLibrary(page: Page, origin: string): Promise<void> {
  await page.goto(`${origin}/health/live`);
  await page.addScriptTag({ url: `${origin}/static/vendor/simplewebauthn-browser.js` });
}
const create = (page: Page, optionsJSON: unknown) =>
  page.evaluate((o) => (window as unknown as { SimpleWebAuthnBrowser: { startRegistration(a: unknown): Promise<unknown> } }).SimpleWebAuthnBrowser.startRegistration({ optionsJSON: o }), optionsJSON);
const get = (page: Page, optionsJSON: unknown) =>
  page.evaluate((o) => (window as unknown as { SimpleWebAuthnBrowser: { startAuthentication(a: unknown): Promise<unknown> } }).SimpleWebAuthnBrowser.startAuthentication({ optionsJSON: o }), optionsJSON);

describeBrowser('PasskeyService with a virtual authenticator', () => {
  const suite = useBrowserSuite(() => startTestServer({ issuerHost: 'localhost' }));
  let n = 0;
  const account = async (tenantId = 't1'): Promise<AccountWithDevices> =>
    suite.server.app.services.accounts.create({ tenantId, userId: `pk-${process.pid}-${++n}`, devices: [{ email: `pk${n}@example.com` }] });
  const service = () => (suite.server as TestServer).app.services.passkeyService;

  test('registers, signs in, refuses a replayed challenge and a cloned authenticator', async () => {
    const origin = suite.server.issuer;
    const page = await suite.openPage('ja');
    const authenticator = await addVirtualAuthenticator(page);
    await loadLibrary(page, origin);
    const owner = await account();

    const regOptions = await service().registrationOptions(owner, 'area-session-1');
    expect(regOptions.rp.id).toBe('localhost');
    // Another binding cannot finish this ceremony (and spends nothing of it).
    const attestation = await create(page, regOptions);
    await expect(service().register(owner, 'area-session-2', attestation, { name: 'x', deviceId: null })).rejects.toBeInstanceOf(BadRequestError);
    const passkey = await service().register(owner, 'area-session-1', JSON.stringify(attestation), { name: ' ノートPC ', deviceId: owner.devices[0]!.id });
    expect(passkey).toMatchObject({ accountId: owner.id, name: 'ノートPC', deviceId: owner.devices[0]!.id, deviceType: 'singleDevice' });
    // The same challenge again: spent.
    await expect(service().register(owner, 'area-session-1', attestation, { name: 'again', deviceId: null })).rejects.toMatchObject({ messageKey: 'passkey:errors.challenge' });

    // A login for this account (binding: its interaction).
    const loginOptions = await service().authenticationOptions('interaction-1', { tenantId: 't1', userId: owner.userId, accountId: owner.id });
    expect(loginOptions.allowCredentials?.map((c) => c.id)).toEqual([passkey.credentialId]);
    const assertion = await get(page, loginOptions);
    const ok = await service().verifyAssertion('interaction-1', assertion, { tenantId: 't1', accountId: owner.id });
    expect(ok).toMatchObject({ ok: true, accountId: owner.id, amr: ['hwk', 'user'] });
    // Replayed: the challenge is gone.
    expect(await service().verifyAssertion('interaction-1', assertion, { tenantId: 't1', accountId: owner.id })).toMatchObject({ ok: false, reason: 'challenge' });

    // A clone of the authenticator, with the key as it was before that sign-in: its counter goes back.
    const [credential] = await authenticator.credentials();
    expect(credential!.signCount).toBeGreaterThan(0);
    const fresh = await service().authenticationOptions('interaction-2', { tenantId: 't1', userId: owner.userId, accountId: owner.id });
    const clonePage = await suite.openPage('ja');
    const clone = await addVirtualAuthenticator(clonePage);
    await clone.addCredential({ ...credential!, signCount: credential!.signCount - 1 });
    await loadLibrary(clonePage, origin);
    const cloned = await get(clonePage, fresh);
    expect(await service().verifyAssertion('interaction-2', cloned, { tenantId: 't1', accountId: owner.id })).toMatchObject({ ok: false, reason: 'counter_regression', accountId: owner.id });

    // The real authenticator still signs in (its counter is ahead).
    const again = await service().authenticationOptions('interaction-3', { tenantId: 't1', userId: owner.userId, accountId: owner.id });
    expect(await service().verifyAssertion('interaction-3', await get(page, again), { tenantId: 't1', accountId: owner.id })).toMatchObject({ ok: true });
    const [stored] = await service().list(owner.id);
    expect(stored!.lastUsedAt).not.toBeNull();
  });

  test('a passkey signs in only its own account of its own tenant; discoverable finds the account', async () => {
    const origin = suite.server.issuer;
    const page = await suite.openPage('en');
    await addVirtualAuthenticator(page);
    await loadLibrary(page, origin);
    const owner = await account();
    const other = await account();
    await service().register(owner, 'b1', await create(page, await service().registrationOptions(owner, 'b1')), { name: 'key', deviceId: null });

    // Asked for another account: refused, and that account is named so its failure counter can move.
    const forOther = await service().authenticationOptions('i1', { tenantId: 't1', userId: other.userId, accountId: other.id });
    // The other account has no passkey: the options name a stand-in credential, stable per user ID.
    const again = await service().authenticationOptions('i1b', { tenantId: 't1', userId: other.userId, accountId: other.id });
    expect(forOther.allowCredentials).toHaveLength(1);
    expect(forOther.allowCredentials![0]!.id).toBe(again.allowCredentials![0]!.id);
    const discoverable = await service().authenticationOptions('i2');
    expect(discoverable.allowCredentials).toBeUndefined();
    const assertion = await get(page, discoverable);
    expect(await service().verifyAssertion('i2', assertion, { tenantId: 't1', accountId: other.id })).toMatchObject({ ok: false, reason: 'other_account', accountId: other.id });

    // Another tenant: refused, naming no account.
    const d2 = await service().authenticationOptions('i3');
    const r2 = await service().verifyAssertion('i3', await get(page, d2), { tenantId: 't2', accountId: null });
    expect(r2).toEqual({ ok: false, reason: 'other_account' });

    // Discoverable in the right tenant: the credential names its account.
    const d3 = await service().authenticationOptions('i4');
    expect(await service().verifyAssertion('i4', await get(page, d3), { tenantId: 't1', accountId: null })).toMatchObject({ ok: true, accountId: owner.id });
  });

  test('malformed answers and names are refused as 400s in the user language', async () => {
    const owner = await account();
    for (const raw of ['{', '{"id":"a"}', JSON.stringify({ id: 'a', rawId: 'a', type: 'public-key', response: { clientDataJSON: 'a\u0000' } }), 'x'.repeat(70_000)]) {
      await expect(service().verifyAssertion('i', raw, { tenantId: 't1', accountId: null })).rejects.toMatchObject({ status: 400, messageKey: 'passkey:errors.invalid_response' });
    }
    await expect(service().rename(owner.id, '00000000-0000-0000-0000-000000000000', ' ')).rejects.toMatchObject({ messageKey: 'passkey:errors.name_required' });
    await expect(service().rename(owner.id, '00000000-0000-0000-0000-000000000000', 'a\u0000b')).rejects.toMatchObject({ messageKey: 'passkey:errors.name_invalid' });
    await expect(service().rename(owner.id, '00000000-0000-0000-0000-000000000000', 'x'.repeat(65))).rejects.toMatchObject({ messageKey: 'passkey:errors.name_too_long' });
    expect(await service().rename(owner.id, '00000000-0000-0000-0000-000000000000', 'fine')).toBe(false);
    // Ids from forms are untrusted: not a UUID is "no such passkey", not a query error.
    expect(await service().rename(owner.id, 'not-a-uuid', 'fine')).toBe(false);
    expect(await service().delete(owner.id, "1' OR '1'='1")).toBeNull();
  });
});
