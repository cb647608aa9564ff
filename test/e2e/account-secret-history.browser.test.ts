import type { Page } from 'playwright-core';
import { hashSecret, normalizeAnswer, verifySecret } from '../../src/credentials/hashing.js';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { describeBrowser, screenshot, useBrowserSuite } from '../support/browser.js';

/** What each page must say, per language (literal, so a broken translation fails the test). */
const TEXTS = {
  ja: {
    browserLocale: 'ja-JP',
    send: '送信',
    otpSubmit: 'ログイン',
    menuSecret: '秘密の質問・答え変更',
    menuHistory: 'ログイン履歴閲覧',
    formTitle: '秘密の質問・答え変更',
    formLead: '現在登録されている秘密の質問と答えの変更を行います。新たに秘密の質問を選択し、その答えを入力してください。',
    userId: 'ユーザID',
    question: '秘密の質問',
    answer: '秘密の質問答え',
    currentQuestion: '初めて飼ったペットの名前は？',
    newQuestion: '生まれた市区町村は？',
    next: '次へ',
    answerRequired: '秘密の質問答えを入力してください。',
    confirmTitle: '秘密の質問・答え変更確認',
    change: '変更',
    doneTitle: '秘密の質問・答え変更完了',
    doneLead: '秘密の質問と答えの変更が完了しました。',
    historyLead: 'お客様の直近1ヶ月のログイン履歴を表示しています。',
    columns: ['日時', 'アクセス元IP', 'ログイン結果', 'ご利用のWebサイト', 'ログイン方法'],
    count1: '1～20/26件',
    pages1: '1/2ページ',
    count2: '21～26/26件',
    pages2: '2/2ページ',
    nextPage: '次へ',
    prevPage: '前へ',
    success: 'ログイン成功',
    wrongOtp: 'ワンタイムパスワード誤り',
    console: 'アカウント管理',
    time: /^\d{4}\/\d{2}\/\d{2} \d{2}:\d{2}:\d{2}$/,
  },
  en: {
    browserLocale: 'en-US',
    send: 'Send',
    otpSubmit: 'Log in',
    menuSecret: 'Change secret question',
    menuHistory: 'Login history',
    formTitle: 'Change secret question',
    formLead: 'Change the secret question and answer registered now. Choose a new secret question and enter its answer.',
    userId: 'User ID',
    question: 'Secret question',
    answer: 'Answer to the secret question',
    currentQuestion: 'What was the name of your first pet?',
    newQuestion: 'In which city or town were you born?',
    next: 'Next',
    answerRequired: 'Please enter the answer to the secret question.',
    confirmTitle: 'Confirm the new secret question',
    change: 'Change',
    doneTitle: 'Secret question changed',
    doneLead: 'Your secret question and answer have been changed.',
    historyLead: 'Your logins of the last month.',
    columns: ['Date and time', 'Source IP address', 'Result', 'Website', 'Login method'],
    count1: '1–20 of 26',
    pages1: 'Page 1 of 2',
    count2: '21–26 of 26',
    pages2: 'Page 2 of 2',
    nextPage: 'Next',
    prevPage: 'Previous',
    success: 'Login succeeded',
    wrongOtp: 'Wrong one-time password',
    console: 'Account area',
    time: /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$/,
  },
} as const;
type Lang = keyof typeof TEXTS;
type Texts = (typeof TEXTS)[Lang];

describeBrowser('account area: secret question and login history in Chromium', () => {
  let s: TestServer;
  const { openPage } = useBrowserSuite(startTestServer, (server) => {
    s = server;
  });

  async function newAccount() {
    const u = uniqueUser('e2e-sq');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    await s.app.services.accounts.setSecretQuestion(account.id, 'first_pet', await hashSecret(normalizeAnswer('ぽち')));
    return { ...u, id: account.id };
  }

  /** The page's language and its visible text (not the HTML source, so hidden text does not count). */
  async function expectPage(page: Page, lang: Lang, ...texts: string[]) {
    expect(await page.locator('html').getAttribute('lang')).toBe(lang);
    const visible = await page.locator('body').innerText();
    for (const text of texts) expect(visible).toContain(text);
  }

  /** From the relying site's link into the area: user ID, the mailed one-time password, the top page. */
  async function signIn(page: Page, t: Texts, u: { userId: string; email: string }) {
    await page.goto(`${s.issuer}/account/?client_id=rp-basic`);
    await page.locator('#userId').waitFor();
    const before = s.smtp.messages.length;
    await page.locator('#userId').fill(u.userId);
    await page.getByRole('button', { name: t.send, exact: true }).click();
    await page.locator('#otp').waitFor();
    await page.locator('#otp').fill(await s.smtp.otpFor(u.email, before));
    await page.locator('form[action$="/otp"]').getByRole('button', { name: t.otpSubmit, exact: true }).click();
    // Back where the link pointed (the top page keeps the site's client_id).
    await page.waitForURL((url) => url.pathname === '/account/');
    await page.locator('#devices').waitFor();
  }

  describe.each(['ja', 'en'] as const)('%s', (lang) => {
    const t = TEXTS[lang];

    test('秘密の質問・答え変更: form → confirmation → 変更 → 完了', async () => {
      const u = await newAccount();
      const page = await openPage(t.browserLocale);
      const shot = (n: string) => screenshot(page, `area-secret-${lang}-${n}`);
      await signIn(page, t, u);

      await page.getByRole('link', { name: t.menuSecret, exact: true }).click();
      await page.waitForURL(`${s.issuer}/account/secret-question`);
      await expectPage(page, lang, t.formTitle, t.formLead, t.userId, u.userId, t.question, t.answer);
      expect(await page.locator('h1').innerText()).toBe(t.formTitle);
      expect(await page.locator('#questionId option:checked').innerText()).toBe(t.currentQuestion);
      await shot('01-form');

      // Nothing entered: the error is at the field, and the page says so.
      await page.locator('#questionId').selectOption({ label: t.newQuestion });
      await page.getByRole('button', { name: t.next, exact: true }).click();
      await page.getByText(t.answerRequired).waitFor();
      expect(await page.locator('#answer').getAttribute('aria-invalid')).toBe('true');
      expect(await page.locator('#questionId option:checked').innerText()).toBe(t.newQuestion);
      await shot('02-form-error');

      await page.locator('#answer').fill('Ｙｏｋｏｈａｍａ');
      await page.getByRole('button', { name: t.next, exact: true }).click();
      await page.waitForURL(`${s.issuer}/account/secret-question/confirm`);
      await expectPage(page, lang, t.confirmTitle, u.userId, t.newQuestion);
      expect((await page.locator('body').innerText()).toLowerCase()).not.toContain('yokohama');
      await shot('03-confirm');

      const before = s.smtp.messages.length;
      await page.getByRole('button', { name: t.change, exact: true }).click();
      await page.waitForURL(`${s.issuer}/account/secret-question/done`);
      await expectPage(page, lang, t.doneTitle, t.doneLead, t.newQuestion);
      await shot('04-done');

      const account = await s.db.prisma.account.findUniqueOrThrow({ where: { id: u.id } });
      expect(account.secretQuestionId).toBe('birthplace');
      expect(await verifySecret(normalizeAnswer('yokohama'), account.secretAnswerHash)).toBe(true);
      await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= before && m.to.includes(u.email));
    });

    test('ログイン履歴閲覧: page 1 → page 2', async () => {
      const u = await newAccount();
      const page = await openPage(t.browserLocale);
      const shot = (n: string) => screenshot(page, `area-history-${lang}-${n}`);
      await signIn(page, t, u);
      // 25 earlier events (plus this sign-in): two pages.
      const now = Date.now();
      await s.db.prisma.loginEvent.createMany({
        data: Array.from({ length: 25 }, (_, i) => ({
          tenantId: 't1',
          accountId: u.id,
          submittedUserId: u.userId,
          clientId: 'rp-basic',
          method: 'otp',
          result: i % 3 === 1 ? 'wrong_otp' : 'success',
          sourceIp: `198.51.100.${i + 1}`,
          userAgent: 'test',
          createdAt: new Date(now - (i + 1) * 5 * 3600_000),
        })),
      });

      await page.getByRole('link', { name: t.menuHistory, exact: true }).click();
      await page.waitForURL(`${s.issuer}/account/history`);
      await expectPage(page, lang, t.historyLead, t.count1, t.pages1, t.success, t.wrongOtp, t.console, '利用サイトA');
      expect(await page.locator('#history thead th').allInnerTexts()).toEqual([...t.columns]);
      expect(await page.locator('#history tbody tr').count()).toBe(20);
      expect(await page.locator('#history tbody tr').first().locator('td').nth(0).innerText()).toMatch(t.time);
      expect(await page.locator('#prev').count()).toBe(0);
      await shot('01-page1');

      await page.getByRole('link', { name: t.nextPage, exact: true }).click();
      await page.waitForURL(`${s.issuer}/account/history?page=2`);
      await expectPage(page, lang, t.count2, t.pages2);
      expect(await page.locator('#history tbody tr').count()).toBe(6);
      expect(await page.locator('#history tbody tr').last().locator('td').nth(1).innerText()).toBe('198.51.100.25');
      expect(await page.locator('#next').count()).toBe(0);
      await shot('02-page2');

      await page.getByRole('link', { name: t.prevPage, exact: true }).click();
      await page.waitForURL(`${s.issuer}/account/history?page=1`);
      await expectPage(page, lang, t.count1, t.pages1);
    });
  });
});
