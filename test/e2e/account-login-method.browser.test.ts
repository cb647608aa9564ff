import type { Page } from 'playwright-core';
import * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { verifySecret } from '../../src/credentials/hashing.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { discover, followToCallback, startLogin, submit } from '../support/browser-less.js';
import { describeBrowser, screenshot, signInToAreaInBrowser, useBrowserSuite } from '../support/browser.js';

const NEW_PASSWORD = 'yuki-no-hi-no-tegami-77';

const TEXTS = {
  ja: {
    browserLocale: 'ja-JP',
    send: '送信',
    otpSubmit: 'ログイン',
    menu: 'ログイン方法の変更',
    chooseLead: 'ログイン方法を変更する場合は、選択して[次へ]を押してください。',
    otp: 'ワンタイムパスワード',
    passwordOtp: 'パスワード＋ワンタイムパスワード',
    next: '次へ',
    confirmLead: '次のユーザのログイン方法を変更し、認証情報を発行しなおします。',
    before: 'ログイン方法',
    after: 'ログイン方法変更後',
    devices: ['端末ID', '端末種別', 'メールアドレス', 'パソコン'],
    execute: '実行',
    common: 'よく使われているパスワードのため使用できません。',
    done: 'ログイン方法を「パスワード＋ワンタイムパスワード」に変更しました。',
  },
  en: {
    browserLocale: 'en-US',
    send: 'Send',
    otpSubmit: 'Log in',
    menu: 'Change login method',
    chooseLead: 'To change your login method, select one and press [Next].',
    otp: 'One-time password',
    passwordOtp: 'Password + one-time password',
    next: 'Next',
    confirmLead: 'The login method of the following user will be changed and the login credentials issued again.',
    before: 'Login method',
    after: 'After the change',
    devices: ['Device ID', 'Device kind', 'E-mail address', 'PC'],
    execute: 'Execute',
    common: 'This password is too common to be used.',
    done: 'Your login method is now "Password + one-time password".',
  },
} as const;

describeBrowser('account area: login method change in Chromium', () => {
  let s: TestServer;
  const { openPage } = useBrowserSuite(
    () => {
      const tenants = parseTenants('t', TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, password_otp, password_certificate]'));
      return startTestServer({ tenants });
    },
    (server) => {
      s = server;
    },
  );

  async function visible(page: Page) {
    return page.locator('body').innerText();
  }

  describe.each(['ja', 'en'] as const)('%s', (lang) => {
    const t = TEXTS[lang];

    test('otp → password + otp: confirm page, old credentials stop working, new ones work', async () => {
      const u = uniqueUser(`e2e-lm-${lang}`);
      const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
      const page = await openPage(t.browserLocale);

      await signInToAreaInBrowser(page, s, u, t);

      await page.getByRole('link', { name: t.menu, exact: true }).click();
      expect(await visible(page)).toContain(t.chooseLead);
      await screenshot(page, `area-method-${lang}-01-choose`);
      await page.getByLabel(t.passwordOtp, { exact: true }).check();
      await page.locator('#next').click();

      const confirm = await visible(page);
      for (const text of [t.confirmLead, t.before, t.after, u.userId, u.email, ...t.devices]) expect(confirm).toContain(text);
      expect(await page.locator('#method-before').innerText()).toBe(t.otp);
      expect(await page.locator('#method-after').innerText()).toBe(t.passwordOtp);
      await screenshot(page, `area-method-${lang}-02-confirm`);

      // A common password is refused in place.
      await page.locator('#password').fill('password1');
      await page.locator('#confirm').fill('password1');
      await page.locator('#execute').click();
      expect(await visible(page)).toContain(t.common);
      expect(await page.locator('#password').getAttribute('aria-invalid')).toBe('true');
      await screenshot(page, `area-method-${lang}-03-error`);

      await page.locator('#password').fill(NEW_PASSWORD);
      await page.locator('#confirm').fill(NEW_PASSWORD);
      await page.locator('#execute').click();
      expect(await page.locator('#method-done').innerText()).toContain(t.done);
      await screenshot(page, `area-method-${lang}-04-done`);

      const stored = await s.app.services.accounts.findById(account.id);
      expect(stored!.loginMethod).toBe('password_otp');
      expect(await verifySecret(NEW_PASSWORD, stored!.passwordHash)).toBe(true);
      expect((await s.db.prisma.accountEvent.findMany({ where: { accountId: account.id, type: 'login_method_changed' } })).map((e) => e.detail)).toEqual([{ from: 'otp', to: 'password_otp' }]);
      await s.smtp.waitFor((m) => m.to.includes(u.email) && /ログイン方法変更|login method has been changed/.test(m.subject));

      // The old credential alone (a mailed code) no longer signs in: a password comes first now.
      const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
      const login = await startLogin(rp, s.issuer);
      await submit(login, 'identify', { userId: u.userId });
      const step = await (await login.agent.get(login.interactionPath)).text();
      expect(step).toContain('type="password"');
      expect((await submit(login, 'otp', { otp: '12345678' })).status).toBe(400);
      // The new ones work: password, then the mailed code; the ID token says so.
      const mark = s.smtp.messages.length;
      expect((await submit(login, 'password', { password: NEW_PASSWORD })).status).toBe(303);
      const res = await submit(login, 'otp', { otp: await s.smtp.otpFor(u.email, mark) });
      const cb = await followToCallback(login.agent, res);
      const tokens = await oidc.authorizationCodeGrant(rp, cb, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
      expect(tokens.claims()).toMatchObject({ amr: ['pwd', 'otp'], acr: 'urn:anshin-login:acr:password-otp' });
    });
  });
});
