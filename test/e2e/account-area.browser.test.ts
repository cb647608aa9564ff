import type { Page } from 'playwright-core';
import { uniqueUser } from '../support/harness.js';
import { describeBrowser, screenshot, startDemoTestServer, useBrowserSuite, type BrowserTestServer } from '../support/browser.js';

/** What each page must say, per language (literal, so a broken translation fails the test). */
const TEXTS = {
  ja: {
    browserLocale: 'ja-JP',
    send: '送信',
    otpSubmit: 'ログイン',
    accountAreaLink: 'アカウント管理（端末・秘密の質問・ログイン履歴）',
    topTitle: 'アカウント管理',
    topLead: '利用されている端末の管理が行えます。',
    menu: ['アカウント管理', '秘密の質問・答え変更', 'ログイン履歴閲覧', 'ログイン中のセッション', 'ログアウト'],
    sessionsMenu: 'ログイン中のセッション',
    sessionsTitle: 'ログイン中のセッション',
    thisBrowser: 'このブラウザ',
    console: 'アカウント管理',
    site: 'デモサイト',
    method: 'ワンタイムパスワード',
    everywhere: 'すべての端末からログアウト',
    signOut: 'ログアウト',
    logout: 'ログアウト',
    logoutQuestion: 'ログアウトしますか？',
    logoutYes: 'ログアウトする',
    loggedOutTitle: 'ログアウトしました',
    time: /\d{4}\/\d{2}\/\d{2} \d{2}:\d{2}:\d{2}/,
  },
  en: {
    browserLocale: 'en-US',
    send: 'Send',
    otpSubmit: 'Log in',
    accountAreaLink: 'Account area (devices, secret question, login history)',
    topTitle: 'Account',
    topLead: 'Manage the devices you use.',
    menu: ['Account', 'Change secret question', 'Login history', 'Active sessions', 'Log out'],
    sessionsMenu: 'Active sessions',
    sessionsTitle: 'Active sessions',
    thisBrowser: 'This browser',
    console: 'Account',
    site: 'デモサイト',
    method: 'One-time password',
    everywhere: 'Sign out everywhere',
    signOut: 'Sign out',
    logout: 'Log out',
    logoutQuestion: 'Do you want to log out?',
    logoutYes: 'Log out',
    loggedOutTitle: 'You have logged out',
    time: /\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC/,
  },
} as const;
type Lang = keyof typeof TEXTS;

describeBrowser('the account area in Chromium', () => {
  let s: BrowserTestServer;
  const { openPage } = useBrowserSuite(startDemoTestServer, (server) => {
    s = server;
  });

  /** The page's language and its visible text (hidden text does not count). */
  async function expectPage(page: Page, lang: Lang, ...texts: Array<string | RegExp>) {
    expect(await page.locator('html').getAttribute('lang')).toBe(lang);
    const visible = await page.locator('body').innerText();
    for (const text of texts) typeof text === 'string' ? expect(visible).toContain(text) : expect(visible).toMatch(text);
  }

  /** Logs in at the demo site with a mailed one-time password. */
  async function demoLogin(page: Page, t: (typeof TEXTS)[Lang], u: { userId: string; email: string }) {
    await page.goto(`${s.origin}/demo/`);
    await page.locator('#login').click();
    await page.locator('#userId').fill(u.userId);
    const before = s.smtp.messages.length;
    await page.getByRole('button', { name: t.send, exact: true }).click();
    await page.locator('#otp').fill(await s.smtp.otpFor(u.email, before));
    await page.locator('form[action$="/otp"]').getByRole('button', { name: t.otpSubmit, exact: true }).click();
    await page.waitForURL(`${s.origin}/demo/`);
  }

  describe.each(['ja', 'en'] as const)('%s', (lang) => {
    const t = TEXTS[lang];

    test('from the site’s アカウント管理 link: top page, sessions page, ログアウト through the provider’s confirmation', async () => {
      const u = uniqueUser('e2e-area');
      await s.app.services.accounts.create({ tenantId: 'demo', userId: u.userId, devices: [{ email: u.email }] });
      // Another browser signed in earlier: a second session on the sessions page.
      await demoLogin(await openPage(t.browserLocale), t, u);
      const page = await openPage(t.browserLocale);
      const shot = (n: string) => screenshot(page, `account-area-${lang}-${n}`);

      // Logged in at the demo site, whose page links to the account area.
      await demoLogin(page, t, u);
      expect((await page.locator('#account-area').innerText()).trim()).toBe(t.accountAreaLink);

      // The area signs in as an OIDC client of the provider: the provider session makes it seamless.
      await page.locator('#account-area').click();
      // Back where the link pointed, after the round trip through the provider.
      await page.waitForURL(`${s.origin}/account/?client_id=demo-site`);
      await expectPage(page, lang, t.topTitle, t.topLead, u.userId, u.email, ...t.menu);
      expect(await page.locator('h1').innerText()).toBe(t.topTitle);
      await shot('01-top');

      await page.getByRole('link', { name: t.sessionsMenu, exact: true }).click();
      await page.waitForURL(`${s.origin}/account/sessions`);
      expect(await page.locator('h1').innerText()).toBe(t.sessionsTitle);
      expect(await page.getByRole('link', { name: t.sessionsMenu, exact: true }).getAttribute('aria-current')).toBe('page');
      const rows = page.locator('#sessions tbody tr');
      expect(await rows.count()).toBe(2);
      // This browser first and marked (signed in to the demo site and the area); the other one has a sign-out button.
      const mine = await rows.nth(0).innerText();
      for (const text of [t.thisBrowser, t.console, t.site, t.method]) expect(mine).toContain(text);
      expect(mine).toMatch(t.time);
      expect(await rows.nth(0).getByRole('button').count()).toBe(0);
      const other = await rows.nth(1).innerText();
      expect(other).toContain(t.site);
      expect(other).not.toContain(t.thisBrowser);
      expect((await rows.nth(1).locator('button').innerText()).trim()).toBe(t.signOut);
      await expect(page.getByRole('button', { name: t.everywhere, exact: true }).isVisible()).resolves.toBe(true);
      await shot('02-sessions');

      // ログアウト in the menu ends the provider session too, after the provider's confirmation.
      expect((await page.locator('#logout').innerText()).trim()).toBe(t.logout);
      await page.locator('#logout').click();
      await page.waitForURL(/\/session\/end/);
      await expectPage(page, lang, t.logoutQuestion);
      await shot('03-logout-confirm');
      await page.getByRole('button', { name: t.logoutYes, exact: true }).click();
      await page.waitForURL(`${s.origin}/account/logged-out`);
      expect(await page.locator('h1').innerText()).toBe(t.loggedOutTitle);
      await shot('04-logged-out');

      // Back through the site's link, the provider asks who the user is: its session is gone.
      await page.goto(`${s.origin}/account/?client_id=demo-site`);
      await page.locator('#userId').waitFor();
    });
  });
});
