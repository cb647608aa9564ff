import type { Page } from 'playwright-core';
import { uniqueUser } from '../support/harness.js';
import { describeBrowser, screenshot, startDemoTestServer, useBrowserSuite, type BrowserTestServer } from '../support/browser.js';

/** What each page must say, per language (literal, so a broken translation fails the test). */
const TEXTS = {
  ja: {
    browserLocale: 'ja-JP',
    demoTitle: 'デモサイト',
    login: 'ログイン',
    identifyTitle: 'ログイン',
    identifyLead: 'ワンタイムパスワードを送信します。ユーザIDを入力してください。',
    userIdLabel: 'ユーザID',
    forSite: 'ご利用のWebサイト: デモサイト',
    send: '送信',
    otpTitle: 'ワンタイムパスワード入力',
    otpLead: 'ワンタイムパスワードを入力してください。',
    otpSentHint: 'ご登録のメールアドレスにワンタイムパスワードを送信しました。',
    otpSubmit: 'ログイン',
    signedInAs: (user: string) => `${user} さんとしてログインしています。`,
    claimsHeading: 'IDトークンの内容',
    logout: 'ログアウト',
    logoutTitle: 'ログアウト',
    logoutQuestion: 'ログアウトしますか？',
    logoutYes: 'ログアウトする',
    logoutNo: 'ログアウトしない',
    authFailed: '認証に失敗しました',
    backToLogin: 'ログインページに戻る',
  },
  en: {
    browserLocale: 'en-US',
    demoTitle: 'Demo site',
    login: 'Log in',
    identifyTitle: 'Log in',
    identifyLead: 'We will send you a one-time password. Please enter your user ID.',
    userIdLabel: 'User ID',
    forSite: 'Signing in to: デモサイト',
    send: 'Send',
    otpTitle: 'Enter your one-time password',
    otpLead: 'Please enter the one-time password.',
    otpSentHint: 'A one-time password has been sent to your registered e-mail address(es).',
    otpSubmit: 'Log in',
    signedInAs: (user: string) => `Signed in as ${user}.`,
    claimsHeading: 'ID token claims',
    logout: 'Log out',
    logoutTitle: 'Log out',
    logoutQuestion: 'Do you want to log out?',
    logoutYes: 'Log out',
    logoutNo: 'Stay logged in',
    authFailed: 'Authentication failed',
    backToLogin: 'Back to the login page',
  },
} as const;
type Lang = keyof typeof TEXTS;
type Texts = (typeof TEXTS)[Lang];

describeBrowser('demo site login in Chromium', () => {
  let s: BrowserTestServer;
  const suite = useBrowserSuite(startDemoTestServer, (server) => {
    s = server;
  });

  async function newAccount() {
    const u = uniqueUser('e2e');
    await s.app.services.accounts.create({ tenantId: 'demo', userId: u.userId, devices: [{ email: u.email }] });
    return u;
  }

  function openPage(locale: string, javaScriptEnabled = true): Promise<Page> {
    return suite.openPage(locale, { javaScriptEnabled });
  }

  /** The page's language and its visible text (not the HTML source, so hidden text does not count). */
  async function expectPage(page: Page, lang: Lang, ...texts: string[]) {
    expect(await page.locator('html').getAttribute('lang')).toBe(lang);
    const visible = await page.locator('body').innerText();
    for (const text of texts) expect(visible).toContain(text);
  }

  /** Demo page → 「ログイン」 → identify page → user ID → OTP page; returns the mail count before sending. */
  async function reachOtpPage(page: Page, lang: Lang, t: Texts, userId: string, shot: (n: string) => Promise<unknown>, demoPath = '/demo/') {
    await page.goto(s.origin + demoPath);
    await expectPage(page, lang, t.demoTitle);
    expect((await page.locator('#login').innerText()).trim()).toBe(t.login);
    await shot('01-demo');

    await page.locator('#login').click();
    await page.waitForURL(/\/interaction\/[^/]+$/);
    await page.locator('#userId').waitFor();
    await expectPage(page, lang, t.identifyTitle, t.identifyLead, t.userIdLabel, t.forSite);
    expect(await page.locator('h1').innerText()).toBe(t.identifyTitle);
    await shot('02-identify');

    const before = s.smtp.messages.length;
    await page.locator('#userId').fill(userId);
    await shot('03-identify-filled');
    await page.getByRole('button', { name: t.send, exact: true }).click();
    await page.locator('#otp').waitFor();
    await expectPage(page, lang, t.otpTitle, t.otpLead, t.otpSentHint, userId);
    expect(await page.locator('h1').innerText()).toBe(t.otpTitle);
    await shot('04-otp');
    return before;
  }

  async function enterOtp(page: Page, t: Texts, otp: string) {
    await page.locator('#otp').fill(otp);
    await page.locator('form[action$="/otp"]').getByRole('button', { name: t.otpSubmit, exact: true }).click();
  }

  async function expectSignedIn(page: Page, lang: Lang, t: Texts, userId: string) {
    await page.waitForURL(`${s.origin}/demo/`);
    await page.locator('#claims').waitFor();
    await expectPage(page, lang, t.signedInAs(userId), t.claimsHeading);
    const claims = JSON.parse(await page.locator('#claims').innerText()) as Record<string, unknown>;
    expect(claims).toMatchObject({ preferred_username: userId, amr: ['otp'], acr: 'urn:anshin-login:acr:otp', iss: s.origin, aud: 'demo-site' });
  }

  /** #logout → the provider's confirmation → 「ログアウトする」 → back on the demo site, signed out. */
  async function logOut(page: Page, lang: Lang, t: Texts, shot: (n: string) => Promise<unknown>) {
    expect((await page.locator('#logout').innerText()).trim()).toBe(t.logout);
    await page.locator('#logout').click();
    await page.waitForURL(/\/session\/end/);
    await expectPage(page, lang, t.logoutTitle, t.logoutQuestion, t.logoutYes, t.logoutNo);
    await shot('06-logout-confirm');

    await page.getByRole('button', { name: t.logoutYes, exact: true }).click();
    await page.waitForURL(`${s.origin}/demo/`);
    await page.locator('#login').waitFor();
    await expectPage(page, lang, t.demoTitle);
    expect(await page.locator('#claims').count()).toBe(0);
    await shot('07-logged-out');

    // The provider's session is gone too: logging in again asks for the user ID.
    await page.locator('#login').click();
    await page.locator('#userId').waitFor();
  }

  describe.each(['ja', 'en'] as const)('%s', (lang) => {
    const t = TEXTS[lang];

    test('log in with a mailed one-time password, see the claims, log out through the confirmation', async () => {
      const u = await newAccount();
      const page = await openPage(t.browserLocale);
      const shot = (n: string) => screenshot(page, `${lang}-${n}`);
      const before = await reachOtpPage(page, lang, t, u.userId, shot);

      const otp = await s.smtp.otpFor(u.email, before);
      await enterOtp(page, t, otp);
      await expectSignedIn(page, lang, t, u.userId);
      await shot('05-signed-in');

      await logOut(page, lang, t, shot);
    });

    test('a wrong one-time password shows the failure with a link back, and the right one still works', async () => {
      const u = await newAccount();
      const page = await openPage(t.browserLocale);
      const shot = (n: string) => screenshot(page, `${lang}-wrong-otp-${n}`);
      const before = await reachOtpPage(page, lang, t, u.userId, shot);
      const otp = await s.smtp.otpFor(u.email, before);
      const interactionUrl = page.url();

      // Differs from the mailed code in the last digit, so it is wrong for sure.
      const wrong = otp.slice(0, -1) + String((Number(otp.at(-1)) + 1) % 10);
      await enterOtp(page, t, wrong);
      await page.getByText(t.authFailed).waitFor();
      await expectPage(page, lang, t.authFailed, t.backToLogin);
      const back = page.getByRole('link', { name: t.backToLogin });
      expect(new URL((await back.getAttribute('href'))!, s.origin).href).toBe(interactionUrl);
      await shot('05-failed');

      await back.click();
      await page.locator('#otp').waitFor();
      await expectPage(page, lang, t.otpTitle);
      await shot('06-back');
      await enterOtp(page, t, otp);
      await expectSignedIn(page, lang, t, u.userId);
    });
  });

  test('works with JavaScript disabled; ?lang=en overrides a Japanese browser for the whole flow', async () => {
    const lang = 'en';
    const t = TEXTS.en;
    const u = await newAccount();
    const page = await openPage('ja-JP', false);
    const shot = (n: string) => screenshot(page, `nojs-${n}`);
    const before = await reachOtpPage(page, lang, t, u.userId, shot, '/demo/?lang=en');

    const otp = await s.smtp.otpFor(u.email, before);
    await enterOtp(page, t, otp);
    await expectSignedIn(page, lang, t, u.userId);
    await shot('05-signed-in');
    await logOut(page, lang, t, shot);
  });
});
