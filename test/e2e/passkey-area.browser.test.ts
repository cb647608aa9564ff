import { randomBytes } from 'node:crypto';
import * as oidc from 'openid-client';
import type { Page } from 'playwright-core';
import { hashSecret, normalizeAnswer } from '../../src/credentials/hashing.js';
import { REDIRECT_URI, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { passkeyTenants } from '../support/passkeys.js';
import { discover } from '../support/browser-less.js';
import { describeBrowser, screenshot, signInToAreaInBrowser, useBrowserSuite } from '../support/browser.js';
import { addVirtualAuthenticator } from '../support/virtual-authenticator.js';

/** What the pages must say, per language (literal, so a broken translation fails the test). */
const TEXTS = {
  ja: {
    browserLocale: 'ja-JP',
    send: '送信',
    otpSubmit: 'ログイン',
    menu: 'パスキー',
    none: '登録されているパスキーはありません。',
    add: 'パスキーを登録',
    registered: 'パスキーを登録しました。',
    neverUsed: '未使用',
    device1: '端末No 1',
    renamed: 'パスキーの名前を変更しました。',
    deleted: 'パスキーを削除しました。',
    deleteLead: '次のパスキーを削除します。',
    lastPasskey: '最後のパスキーは削除できません',
    noticeRegistered: 'パスキー登録のお知らせ',
    noticeDeleted: 'パスキー削除のお知らせ',
    methodMenu: 'ログイン方法の変更',
    passkeyMethod: 'パスキー',
    passkeyHint: 'パスキーを登録すると選択できます',
    passkeyNote: '変更後は、登録済みのパスキーでログインします。',
    methodDone: 'ログイン方法を「パスキー」に変更しました。',
    activationNext: '次へ',
    activationSection: 'パスキーの登録',
    activationDone: '認証情報の登録が完了しました。',
    recoveryNext: '次へ',
    recoveryLead: '新しいパスキーを登録します。',
    recoveryDone: '新しいパスキーを登録しました。新しいパスキーでログインしてください。',
    recoveryOff: 'ご利用のWebサイト運営会社のサポート窓口へご連絡ください。',
    recoveryMail: 'パスキーの再登録',
  },
  en: {
    browserLocale: 'en-US',
    send: 'Send',
    otpSubmit: 'Log in',
    menu: 'Passkeys',
    none: 'No passkeys are registered.',
    add: 'Register a passkey',
    registered: 'The passkey has been registered.',
    neverUsed: 'Not used yet',
    device1: 'Device No. 1',
    renamed: 'The passkey has been renamed.',
    deleted: 'The passkey has been deleted.',
    deleteLead: 'The following passkey will be deleted',
    lastPasskey: 'your last passkey cannot be deleted',
    noticeRegistered: 'A passkey was registered',
    noticeDeleted: 'A passkey was deleted',
    methodMenu: 'Change login method',
    passkeyMethod: 'Passkey',
    passkeyHint: 'can be chosen once you have registered a passkey',
    passkeyNote: 'After the change, you sign in with your registered passkey.',
    methodDone: 'Your login method is now "Passkey".',
    activationNext: 'Next',
    activationSection: 'Register a passkey',
    activationDone: 'Your credentials have been registered.',
    recoveryNext: 'Next',
    recoveryLead: 'Register a new passkey.',
    recoveryDone: 'Your new passkey has been registered. Please log in with it.',
    recoveryOff: 'Please contact the support desk of the website you use.',
    recoveryMail: 'Passkey registered again',
  },
} as const;

const ANSWER = 'みなとみらい';


describeBrowser('passkeys: account area, login method, activation and recovery in Chromium', () => {
  let s: TestServer;
  const { openPage } = useBrowserSuite(
    // WebAuthn refuses an IP address as relying-party ID.
    () => startTestServer({ tenants: passkeyTenants(), issuerHost: 'localhost' }),
    (server) => {
      s = server;
    },
  );

  const text = (page: Page) => page.locator('body').innerText();


  /**
   * "Can sign in with the new passkey": the assertion ceremony the login's passkey step runs, here
   * straight through PasskeyService with the page's authenticator (the login screens have their own tests).
   */
  async function assertSignsIn(page: Page, account: { id: string; tenantId: string; userId: string }) {
    const binding = `test:${account.id}:${Date.now()}`;
    const options = await s.app.services.passkeyService.authenticationOptions(binding, { tenantId: account.tenantId, userId: account.userId, accountId: account.id });
    await page.addScriptTag({ url: `${s.issuer}/static/vendor/simplewebauthn-browser.js` });
    const answer: unknown = await page.evaluate(
      (optionsJSON) => (window as unknown as { SimpleWebAuthnBrowser: { startAuthentication(o: { optionsJSON: unknown }): Promise<unknown> } }).SimpleWebAuthnBrowser.startAuthentication({ optionsJSON }),
      options,
    );
    const result = await s.app.services.passkeyService.verifyAssertion(binding, answer, { tenantId: account.tenantId, accountId: account.id });
    expect(result).toMatchObject({ ok: true, accountId: account.id });
  }

  const sinceMark = (mark: number) => (m: { to: string[] }) => s.smtp.messages.indexOf(m as never) >= mark;

  describe.each(['ja', 'en'] as const)('%s', (lang) => {
    const t = TEXTS[lang];

    test('account area: register (with its device), the notice, last used, rename, the login method change, the last one kept, delete', async () => {
      const u = uniqueUser(`e2e-pk-${lang}`);
      const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
      const page = await openPage(t.browserLocale);
      const authenticator = await addVirtualAuthenticator(page);
      await signInToAreaInBrowser(page, s, u, TEXTS[lang]);

      // Without a passkey the passkey methods are not offered yet, and the page says how to get them.
      await page.getByRole('link', { name: t.methodMenu, exact: true }).click();
      expect(await text(page)).toContain(t.passkeyHint);
      expect(await page.locator('input[value="passkey"]').count()).toBe(0);

      await page.getByRole('link', { name: t.menu, exact: true }).click();
      expect(await page.locator('#no-passkeys').innerText()).toBe(t.none);
      await screenshot(page, `passkey-area-${lang}-01-empty`);

      await page.locator('#add-passkey').click();
      await page.locator('#passkey-register').waitFor();
      await page.locator('#name').fill('会社のパソコン');
      await page.locator('#device').selectOption('1');
      await screenshot(page, `passkey-area-${lang}-02-new`);
      const mark = s.smtp.messages.length;
      await page.locator('#register').click();
      expect(await page.locator('#passkey-done').innerText()).toBe(t.registered);
      const row = page.locator('#passkeys tbody tr');
      expect(await row.count()).toBe(1);
      expect(await row.locator('.passkey-name').innerText()).toBe('会社のパソコン');
      expect(await row.locator('.passkey-device').innerText()).toBe(t.device1);
      expect(await row.locator('.passkey-last-used').innerText()).toBe(t.neverUsed);
      await screenshot(page, `passkey-area-${lang}-03-registered`);

      const stored = await s.db.prisma.passkey.findMany({ where: { accountId: account.id } });
      expect(stored).toHaveLength(1);
      expect(stored[0]!.deviceId).toBe(account.devices[0]!.id);
      expect((await authenticator.credentials()).map((c) => Buffer.from(c.credentialId, 'base64').toString('base64url'))).toEqual([stored[0]!.credentialId]);
      expect((await s.db.prisma.accountEvent.findMany({ where: { accountId: account.id, type: 'passkey_registered' } })).map((e) => e.detail)).toEqual([
        { passkey: stored[0]!.id, name: '会社のパソコン' },
      ]);
      const notice = await s.smtp.waitFor((m) => sinceMark(mark)(m) && m.to.includes(u.email) && m.subject.includes(t.noticeRegistered));
      expect(notice.text).toContain('会社のパソコン');

      // The new passkey signs in; the list then shows when it was last used.
      await assertSignsIn(page, account);
      await page.reload();
      expect(await row.locator('.passkey-last-used').innerText()).not.toBe(t.neverUsed);
      await screenshot(page, `passkey-area-${lang}-04-last-used`);

      await row.getByRole('link', { name: lang === 'ja' ? '名前の変更' : 'Rename', exact: true }).click();
      await page.locator('#name').fill('自宅のノートPC');
      await screenshot(page, `passkey-area-${lang}-05-rename`);
      await page.locator('#rename').click();
      expect(await page.locator('#passkey-done').innerText()).toBe(t.renamed);
      expect(await row.locator('.passkey-name').innerText()).toBe('自宅のノートPC');

      // Now the passkey methods are offered.
      await page.getByRole('link', { name: t.methodMenu, exact: true }).click();
      await screenshot(page, `passkey-area-${lang}-06-method-choose`);
      await page.getByLabel(t.passkeyMethod, { exact: true }).check();
      await page.locator('#next').click();
      expect(await page.locator('#passkey-note').innerText()).toBe(t.passkeyNote);
      await screenshot(page, `passkey-area-${lang}-07-method-confirm`);
      await page.locator('#execute').click();
      expect(await page.locator('#method-done').innerText()).toContain(t.methodDone);
      expect((await s.app.services.accounts.findById(account.id))!.loginMethod).toBe('passkey');

      // The only passkey of a passkey method stays.
      await page.goto(`${s.issuer}/account/passkeys`);
      await row.getByRole('link', { name: lang === 'ja' ? '削除' : 'Delete', exact: true }).click();
      expect(await page.locator('#delete-problem').innerText()).toContain(t.lastPasskey);
      expect(await page.locator('#delete').count()).toBe(0);
      await screenshot(page, `passkey-area-${lang}-08-delete-refused`);

      // Back to the mailed code: now it may go.
      await s.db.prisma.account.update({ where: { id: account.id }, data: { loginMethod: 'otp' } });
      await page.reload();
      expect(await text(page)).toContain(t.deleteLead);
      await screenshot(page, `passkey-area-${lang}-09-delete-confirm`);
      const before = s.smtp.messages.length;
      await page.locator('#delete').click();
      expect(await page.locator('#passkey-done').innerText()).toBe(t.deleted);
      expect(await page.locator('#no-passkeys').count()).toBe(1);
      expect(await s.db.prisma.passkey.count({ where: { accountId: account.id } })).toBe(0);
      await s.smtp.waitFor((m) => sinceMark(before)(m) && m.to.includes(u.email) && m.subject.includes(t.noticeDeleted));
      expect(await s.db.prisma.accountEvent.count({ where: { accountId: account.id, type: 'passkey_deleted' } })).toBe(1);
    });

    test('activation of a passkey method registers a passkey before the account is active', async () => {
      const u = uniqueUser(`e2e-pkact-${lang}`);
      const { account, activation } = await s.app.services.accountService.create('t1', { userId: u.userId, devices: [{ email: u.email }], loginMethod: 'passkey' }, { actor: 'api' });
      const page = await openPage(t.browserLocale);
      await addVirtualAuthenticator(page);
      await page.goto(activation.url);
      await page.locator('#otp').fill(activation.otp);
      await page.getByRole('button', { name: t.activationNext, exact: true }).click();
      await page.locator('#passkey-section').waitFor();
      expect(await page.locator('#passkey-section legend').innerText()).toBe(t.activationSection);
      // No password for a passkey method.
      expect(await page.locator('#password').count()).toBe(0);
      await page.locator('#questionId').selectOption('birthplace');
      await page.locator('#answer').fill(ANSWER);
      await screenshot(page, `passkey-activation-${lang}-01-register`);
      await page.locator('#activation-register button[type="submit"]').click();
      await page.getByText(t.activationDone).waitFor();
      await screenshot(page, `passkey-activation-${lang}-02-done`);

      const active = (await s.app.services.accounts.findById(account.id))!;
      expect(active.status).toBe('active');
      expect(active.passwordHash).toBeNull();
      const passkeys = await s.db.prisma.passkey.findMany({ where: { accountId: account.id } });
      expect(passkeys).toHaveLength(1);
      await assertSignsIn(page, active);
    });

    /** A passkey-method account with a secret question, whose passkey is lost (none in this browser). */
    async function lostPasskeyAccount(tenantId: string, prefix: string) {
      const u = uniqueUser(prefix);
      const account = await s.app.services.accounts.create({ tenantId, userId: u.userId, loginMethod: 'passkey', devices: [{ email: u.email }] });
      await s.app.services.accounts.setSecretQuestion(account.id, 'birthplace', await hashSecret(normalizeAnswer(ANSWER)));
      return { u, account };
    }

    /** The recovery pages of a fresh login at `client`, up to the secret question. */
    async function recoverUpToQuestion(page: Page, client: { id: string; secret: string }, u: { userId: string; email: string }) {
      const rp = await discover(s.issuer, client.id, client.secret);
      const url = oidc.buildAuthorizationUrl(rp, { redirect_uri: REDIRECT_URI, scope: 'openid', code_challenge: oidc.randomPKCECodeVerifier().slice(0, 43), code_challenge_method: 'S256', state: oidc.randomState() });
      await page.goto(url.href);
      const uid = new URL(page.url()).pathname.split('/')[2]!;
      await page.goto(`${s.issuer}/interaction/${uid}/recovery`);
      const before = s.smtp.messages.length;
      await page.locator('#userId').fill(u.userId);
      await page.locator('form[action$="/recovery/identify"] button[type="submit"]').click();
      await page.locator('#otp').fill(await s.smtp.otpFor(u.email, before));
      await page.locator('form[action$="/recovery/code"] button[type="submit"]').click();
      return uid;
    }

    test('recovery of a lost passkey: mailed code, secret question, then a new passkey (old ones stay)', async () => {
      const { u, account } = await lostPasskeyAccount('t1', `e2e-pkrec-${lang}`);
      const old = await s.app.services.passkeys.create({
        accountId: account.id,
        deviceId: null,
        credentialId: randomBytes(16).toString('base64url'),
        publicKey: randomBytes(77),
        counter: 0,
        transports: [],
        deviceType: 'singleDevice',
        backedUp: false,
        aaguid: null,
        name: 'なくしたスマートフォン',
      });
      const page = await openPage(t.browserLocale);
      await addVirtualAuthenticator(page);
      await recoverUpToQuestion(page, { id: 'rp-basic', secret: 'rp-basic-secret-0123456789' }, u);
      await page.locator('#answer').fill(ANSWER);
      await page.locator('form[action$="/recovery/question"] button[type="submit"]').click();
      await page.locator('#recovery-passkey').waitFor();
      expect(await text(page)).toContain(t.recoveryLead);
      await screenshot(page, `passkey-recovery-${lang}-01-register`);
      const mark = s.smtp.messages.length;
      await page.locator('#register').click();
      expect(await page.locator('#recovery-done').innerText()).toBe(t.recoveryDone);
      await screenshot(page, `passkey-recovery-${lang}-02-done`);

      const passkeys = await s.db.prisma.passkey.findMany({ where: { accountId: account.id }, orderBy: { createdAt: 'asc' } });
      expect(passkeys.map((p) => p.id)[0]).toBe(old!.id);
      expect(passkeys).toHaveLength(2);
      await s.smtp.waitFor((m) => sinceMark(mark)(m) && m.to.includes(u.email) && m.text.includes(t.recoveryMail));
      await assertSignsIn(page, account);
    });

    test('recovery of a lost passkey where the contract has no passkey recovery: the support desk', async () => {
      const { u, account } = await lostPasskeyAccount('t2', `e2e-pkoff-${lang}`);
      const page = await openPage(t.browserLocale);
      await recoverUpToQuestion(page, { id: 'rp-t2', secret: 'rp-t2-secret-01234567890' }, u);
      expect(await page.locator('#recovery-unavailable').innerText()).toContain(t.recoveryOff);
      expect(await page.locator('#answer').count()).toBe(0);
      await screenshot(page, `passkey-recovery-${lang}-03-unavailable`);
      expect(await s.db.prisma.passkey.count({ where: { accountId: account.id } })).toBe(0);
    });
  });
});
