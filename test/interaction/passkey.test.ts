import { randomBytes } from 'node:crypto';
import * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { REDIRECT_URI, startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { csrfOf, discover, startLogin, submit } from '../support/browser-less.js';

/**
 * The passkey screens' server side without a browser: what a client that makes no real WebAuthn
 * ceremony can post. The ceremonies themselves are in test/e2e/passkey-login.browser.test.ts.
 */
describe('passkey factor and the login without a user ID (no browser)', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  let rpOtpOnly: oidc.Configuration;
  let rpPasskeyOnly: oidc.Configuration;
  beforeAll(async () => {
    // t1 allows passkeys; t2 keeps the default contract (otp only); t3 has the passkey method alone.
    const t3 = `
  - id: t3
    name: テナント3
    contract: { login_methods: [passkey] }
    clients:
      - { client_id: rp-t3, client_secret: rp-t3-secret-01234567890, name: パスキーのサイト, redirect_uris: ['${REDIRECT_URI}'] }
`;
    const tenants = parseTenants('t', TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, passkey, otp_passkey]') + t3);
    s = await startTestServer({ tenants });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    rpOtpOnly = await discover(s.issuer, 'rp-t2', 'rp-t2-secret-01234567890');
    rpPasskeyOnly = await discover(s.issuer, 'rp-t3', 'rp-t3-secret-01234567890');
  });
  afterAll(async () => {
    await s?.close();
  });

  /** An assertion as a browser would shape it, for the page's challenge, naming a credential nobody registered. */
  function madeUpAssertion(challenge: string) {
    const clientData = { type: 'webauthn.get', challenge, origin: s.issuer };
    const id = randomBytes(16).toString('base64url');
    return JSON.stringify({
      id,
      rawId: id,
      type: 'public-key',
      response: {
        clientDataJSON: Buffer.from(JSON.stringify(clientData)).toString('base64url'),
        authenticatorData: randomBytes(37).toString('base64url'),
        signature: randomBytes(70).toString('base64url'),
      },
      clientExtensionResults: {},
    });
  }

  const optionsOn = (html: string) => {
    const m = /<script id="passkey-options" type="application\/json">([^<]*)<\/script>/.exec(html);
    return m ? (JSON.parse(m[1]!) as { challenge: string; allowCredentials?: Array<{ id: string }> }) : undefined;
  };

  test('the user-ID page offers passkeys only when the contract has a passkey method', async () => {
    const withPasskeys = await startLogin(rp, s.issuer);
    const page = await (await withPasskeys.agent.get(withPasskeys.interactionPath)).text();
    expect(page).toContain('autocomplete="username webauthn"');
    expect(page).toContain(`action="/interaction/${withPasskeys.uid}/passkey-discover"`);
    expect(optionsOn(page)?.allowCredentials).toBeUndefined(); // discoverable: any passkey of this site

    const otpOnly = await startLogin(rpOtpOnly, s.issuer);
    const plain = await (await otpOnly.agent.get(otpOnly.interactionPath)).text();
    expect(plain).toContain('autocomplete="username"');
    expect(plain).not.toContain('passkey');
    // And its login takes no passkey answer without a user ID.
    const res = await otpOnly.agent.post(`${otpOnly.interactionPath}/passkey-discover`, { _csrf: csrfOf(plain), response: madeUpAssertion('x') });
    expect(res.status).toBe(400);
  });

  test('an unregistered passkey without a user ID: refused, recorded without an account, its challenge spent', async () => {
    const login = await startLogin(rp, s.issuer);
    const page = await (await login.agent.get(login.interactionPath)).text();
    const { challenge } = optionsOn(page)!;
    expect(await s.db.prisma.webauthnChallenge.count({ where: { challenge } })).toBe(1);
    const res = await login.agent.post(`${login.interactionPath}/passkey-discover`, { _csrf: csrfOf(page), response: madeUpAssertion(challenge) });
    expect(res.status).toBe(401);
    expect(await res.text()).toContain('このパスキーは登録されていません。');
    expect(await s.db.prisma.webauthnChallenge.count({ where: { challenge } })).toBe(0);
    const events = await s.db.prisma.loginEvent.findMany({ where: { clientId: 'rp-basic', result: 'wrong_passkey' } });
    expect(events.map((e) => [e.accountId, e.method])).toEqual([[null, 'passkey']]);
    // Still at the user-ID step.
    expect((await s.db.prisma.loginFlow.findUnique({ where: { interactionUid: login.uid } }))?.state ?? 'identify').toBe('identify');
  });

  test('a malformed answer is a 400 that counts nothing, on the passkey step and without a user ID', async () => {
    const u = uniqueUser('pk');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, loginMethod: 'passkey', devices: [{ email: u.email }] });
    const login = await startLogin(rp, s.issuer);
    const page = await (await login.agent.get(login.interactionPath)).text();
    for (const response of ['', 'not json', '{"id":"x"}', JSON.stringify({ id: 'a\u0000b' })]) {
      const res = await login.agent.post(`${login.interactionPath}/passkey-discover`, { _csrf: csrfOf(page), response });
      expect(res.status).toBe(400);
    }
    await submit(login, 'identify', { userId: u.userId });
    for (const response of ['', 'not json', '{"id":"x"}']) expect((await submit(login, 'passkey', { response })).status).toBe(400);
    expect((await s.app.services.accounts.findById(account.id))!.failedAttempts).toBe(0);
    expect(await s.db.prisma.loginEvent.count({ where: { accountId: account.id } })).toBe(0);
  });

  test('once a user ID is given, the login without one is closed; the passkey page of an ID without passkeys has a stand-in', async () => {
    const u = uniqueUser('pk');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, loginMethod: 'passkey', devices: [{ email: u.email }] });
    const login = await startLogin(rp, s.issuer);
    const identifyPage = await (await login.agent.get(login.interactionPath)).text();
    await submit(login, 'identify', { userId: u.userId });
    const page = await (await login.agent.get(login.interactionPath)).text();
    expect(optionsOn(page)?.allowCredentials).toHaveLength(1);
    const res = await login.agent.post(`${login.interactionPath}/passkey-discover`, { _csrf: csrfOf(identifyPage), response: madeUpAssertion(optionsOn(identifyPage)!.challenge) });
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('ユーザIDは入力済みです');
  });

  test('unknown, pending, locked and passkey-less IDs get the same passkey page (stand-in options, shaped alike)', async () => {
    const seen: Record<string, { page: string; allow: number; idLength: number }> = {};
    for (const kind of ['live', 'unknown', 'pending', 'locked'] as const) {
      const u = uniqueUser(kind);
      if (kind !== 'unknown') {
        const a = await s.app.services.accounts.create({ tenantId: 't3', userId: u.userId, loginMethod: 'passkey', status: kind === 'pending' ? 'pending_activation' : 'active', devices: [{ email: u.email }] });
        if (kind === 'locked') await s.db.prisma.account.update({ where: { id: a.id }, data: { lockedAt: new Date() } });
      }
      const login = await startLogin(rpPasskeyOnly, s.issuer);
      expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
      const html = await (await login.agent.get(login.interactionPath)).text();
      const options = optionsOn(html)!;
      seen[kind] = {
        page: html
          .replace(/<script id="passkey-options" type="application\/json">[^<]*<\/script>/, 'OPTIONS')
          .replaceAll(login.uid, 'UID')
          .replaceAll(u.userId, 'USER')
          .replace(/name="_csrf" value="[^"]+"/g, 'CSRF'),
        allow: options.allowCredentials?.length ?? 0,
        idLength: options.allowCredentials?.[0]?.id.length ?? 0,
      };
    }
    expect(seen.live!.page).toContain('id="passkey-form"');
    expect(seen.live!.allow).toBe(1);
    for (const kind of ['unknown', 'pending', 'locked']) expect(seen[kind]).toEqual(seen.live);
  });
});
