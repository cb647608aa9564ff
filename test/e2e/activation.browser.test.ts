import * as oidc from 'openid-client';
import type { Page } from 'playwright-core';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { discover, followToCallback, startLogin, submit } from '../support/browser-less.js';
import { describeBrowser, screenshot, useBrowserSuite } from '../support/browser.js';

/** What each page must say, per language (literal, so a broken translation fails the test). */
const TEXTS = {
  ja: {
    browserLocale: 'ja-JP',
    steps: ['初回認証', '認証情報登録', '認証情報登録完了'],
    verifyTitle: '初回認証',
    verifyLead: 'お客様のログインに使用する認証情報を登録します。お客様に送られたワンタイムパスワードを入力し、認証情報登録画面に進んでください。',
    userId: 'ユーザID',
    otp: 'ワンタイムパスワード',
    next: '次へ',
    mismatch: 'ワンタイムパスワードが一致しません',
    registerTitle: '認証情報登録',
    registerLead: 'お客様のログインに使用する認証情報を入力してください。認証情報をお忘れの際に確認するための秘密の質問を選択し、その答えを入力してください。',
    question: '秘密の質問',
    questionText: '生まれた市区町村は？',
    answer: '秘密の質問答え',
    answerRequired: '秘密の質問答えを入力してください。',
    submit: '登録',
    doneTitle: '認証情報登録完了',
    done: '認証情報の登録が完了しました。ご利用のWebサイトにアクセスしてください。',
  },
  en: {
    browserLocale: 'en-US',
    steps: ['First-time authentication', 'Register your credentials', 'Registration complete'],
    verifyTitle: 'First-time authentication',
    verifyLead: 'Let us register the credentials you will use to log in. Please enter the one-time password that was sent to you and proceed to the registration screen.',
    userId: 'User ID',
    otp: 'One-time password',
    next: 'Next',
    mismatch: 'The one-time password does not match',
    registerTitle: 'Register your credentials',
    registerLead: 'Please enter the credentials you will use to log in. Choose a secret question',
    question: 'Secret question',
    questionText: 'In which city or town were you born?',
    answer: 'Answer to the secret question',
    answerRequired: 'Please enter the answer to the secret question.',
    submit: 'Register',
    doneTitle: 'Registration complete',
    done: 'Your credentials have been registered. Please go to the website you use.',
  },
} as const;
type Lang = keyof typeof TEXTS;
type Texts = (typeof TEXTS)[Lang];

describeBrowser('activation in Chromium', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  const suite = useBrowserSuite(startTestServer, async (server) => {
    s = server;
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });

  function openPage(locale: string, javaScriptEnabled = true): Promise<Page> {
    return suite.openPage(locale, { javaScriptEnabled });
  }

  async function expectPage(page: Page, lang: Lang, ...texts: string[]) {
    expect(await page.locator('html').getAttribute('lang')).toBe(lang);
    const visible = await page.locator('body').innerText();
    for (const text of texts) expect(visible).toContain(text);
  }

  /** The step indicator names all three steps and marks exactly the current one. */
  async function expectStep(page: Page, t: Texts, current: number) {
    const items = page.locator('ol.steps li');
    expect(await items.count()).toBe(3);
    for (let i = 0; i < 3; i++) {
      expect(await items.nth(i).innerText()).toContain(t.steps[i]);
      expect(await items.nth(i).getAttribute('aria-current')).toBe(i === current ? 'step' : null);
    }
  }

  /** The site's back office creates the account through the management API, as a tenant would. */
  async function createThroughApi(u: { userId: string; email: string }): Promise<{ url: string; otp: string }> {
    const backOffice = await discover(s.issuer, 'backoffice-t1', 'backoffice-t1-secret-0123456789');
    const { access_token } = await oidc.clientCredentialsGrant(backOffice, { scope: 'management' });
    const res = await fetch(`${s.issuer}/api/v1/accounts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ userId: u.userId, devices: [{ email: u.email, kind: 'pc' }] }),
    });
    expect(res.status).toBe(201);
    return ((await res.json()) as { activation: { url: string; otp: string } }).activation;
  }

  /** Activates through the three screens from the URL the management API returned; returns the user. */
  async function activate(lang: Lang, page: Page, shotPrefix: string) {
    const t = TEXTS[lang];
    const u = uniqueUser('e2eact');
    const activation = await createThroughApi(u);
    const shot = (n: string) => screenshot(page, `${shotPrefix}-${n}`);

    // 初回認証: the user ID comes filled in from the URL.
    await page.goto(activation.url);
    await expectPage(page, lang, t.verifyTitle, t.verifyLead, t.userId, t.otp);
    await expectStep(page, t, 0);
    expect(await page.getByLabel(t.userId, { exact: true }).inputValue()).toBe(u.userId);
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('otp');
    await shot('01-verify');

    // A wrong code first, as in the manual's second screen.
    const wrong = activation.otp.slice(0, -1) + String((Number(activation.otp.at(-1)) + 1) % 10);
    await page.getByLabel(t.otp, { exact: true }).fill(wrong);
    await page.getByRole('button', { name: t.next, exact: true }).click();
    await page.getByRole('alert').getByText(t.mismatch).waitFor();
    expect(await page.getByLabel(t.userId, { exact: true }).inputValue()).toBe(u.userId);
    expect(await page.getByLabel(t.otp, { exact: true }).getAttribute('aria-invalid')).toBe('true');
    await shot('02-verify-mismatch');

    await page.getByLabel(t.otp, { exact: true }).fill(activation.otp);
    await page.getByRole('button', { name: t.next, exact: true }).click();
    await page.waitForURL(/\/activation\/t1\/register$/);

    // 認証情報登録: an empty answer is refused at the field, then the real one goes through.
    await expectPage(page, lang, t.registerTitle, t.registerLead, u.userId, t.question, t.answer);
    await expectStep(page, t, 1);
    await page.getByLabel(t.question, { exact: true }).selectOption({ label: t.questionText });
    await shot('03-register');
    await page.getByRole('button', { name: t.submit, exact: true }).click();
    await page.getByText(t.answerRequired).waitFor();
    expect(await page.getByLabel(t.answer, { exact: true }).getAttribute('aria-invalid')).toBe('true');
    expect(await page.getByLabel(t.question, { exact: true }).inputValue()).toBe('birthplace');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('answer');
    await shot('04-register-error');

    await page.getByLabel(t.answer, { exact: true }).fill('札幌市');
    await page.getByRole('button', { name: t.submit, exact: true }).click();
    await page.waitForURL(/\/activation\/t1\/done$/);

    // 認証情報登録完了.
    await expectPage(page, lang, t.doneTitle, t.done);
    await expectStep(page, t, 2);
    await shot('05-done');
    return u;
  }

  /** The relying site's login afterwards, driven by openid-client over HTTP. */
  async function oidcLogin(u: { userId: string; email: string }) {
    const before = s.smtp.messages.length;
    const login = await startLogin(rp, s.issuer);
    expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
    const otp = await s.smtp.otpFor(u.email, before);
    const res = await submit(login, 'otp', { otp });
    const callback = await followToCallback(login.agent, res);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    expect(tokens.claims()).toMatchObject({ preferred_username: u.userId, iss: s.issuer, aud: 'rp-basic', amr: ['otp'] });
  }

  test.each(['ja', 'en'] as const)('%s: from the activation URL through the three steps, then an OIDC login', async (lang) => {
    const page = await openPage(TEXTS[lang].browserLocale);
    const u = await activate(lang, page, `activation-${lang}`);
    const account = await s.app.services.accounts.findByUserId('t1', u.userId);
    expect(account).toMatchObject({ status: 'active', secretQuestionId: 'birthplace' });
    await oidcLogin(u);
  });

  test('works with JavaScript disabled', async () => {
    const page = await openPage('ja-JP', false);
    const u = await activate('ja', page, 'activation-nojs');
    await oidcLogin(u);
  });
});
