import * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { hashSecret, normalizeAnswer, verifySecret } from '../../src/credentials/hashing.js';
import { Agent, discover, startLogin, type StartedLogin } from '../support/browser-less.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { mailedBeforeMarker } from '../support/mail-marker.js';

// t1's contract allows only otp; recovery's password branch needs accounts that sign in with one.
const TENANTS = parseTenants('recovery test tenants', TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, password, password_otp]'));
const OLD_PASSWORD = 'old-Lantern-Walrus-91';
const NEW_PASSWORD = 'new-Harbour-Quince-47';

describe('recovery: lost access, proven by a mailed code and the secret question', () => {
  let s: TestServer;
  let rp: oidc.Configuration;

  beforeAll(async () => {
    s = await startTestServer({ tenants: TENANTS });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    await s?.close();
  });

  /** An active t1 account; `answer: null` leaves it without a secret question. */
  async function newAccount(opts: { method?: 'otp' | 'password' | 'password_otp'; answer?: string | null } = {}) {
    const u = uniqueUser('rcv');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    if (opts.answer !== null) await s.app.services.accounts.setSecretQuestion(account.id, 'first_pet', await hashSecret(normalizeAnswer(opts.answer ?? 'ポチ')));
    if (opts.method && opts.method !== 'otp') {
      await s.db.prisma.account.update({ where: { id: account.id }, data: { loginMethod: opts.method } });
      await s.app.services.accounts.setPassword(account.id, await hashSecret(OLD_PASSWORD));
    }
    return { ...u, account };
  }

  const url = (l: StartedLogin, rest = '') => `${l.interactionPath}/recovery${rest}`;

  /** Opens the recovery entry point and follows it to the current step's page. */
  async function open(l: StartedLogin): Promise<{ step: string; html: string; status: number }> {
    const entry = await l.agent.get(url(l));
    expect(entry.status).toBe(303);
    const location = entry.headers.get('location')!;
    const page = await l.agent.get(location);
    return { step: location.split('/').pop()!, html: await page.text(), status: page.status };
  }

  /** Posts one step's form with the page's CSRF token (the signed cookie's value). */
  async function send(l: StartedLogin, action: string, fields: Record<string, string> = {}): Promise<Response> {
    if (!l.agent.cookies.get('csrf')) await open(l);
    return l.agent.post(url(l, `/${action}`), { _csrf: l.agent.cookies.get('csrf')!, ...fields });
  }

  const stepAfter = (res: Response) => res.headers.get('location')?.split('/').pop();

  /** Recovery up to the question page: user ID, then the mailed code. */
  async function throughCode(l: StartedLogin, u: { userId: string; email: string }) {
    const before = s.smtp.messages.length;
    const identified = await send(l, 'identify', { userId: u.userId });
    expect(identified.status).toBe(303);
    expect(stepAfter(identified)).toBe('code');
    const otp = await s.smtp.otpFor(u.email, before);
    const coded = await send(l, 'code', { otp });
    expect(coded.status).toBe(303);
    expect(stepAfter(coded)).toBe('question');
  }

  const loginEvents = (userId: string) => s.db.prisma.loginEvent.findMany({ where: { submittedUserId: userId }, orderBy: { createdAt: 'asc' } });
  const accountEvents = async (accountId: string) => (await s.app.services.accountEvents.list(accountId)).map((e) => e.type).sort();
  const account = async (id: string) => (await s.app.services.accounts.findById(id))!;

  test('the login pages link to recovery', async () => {
    const l = await startLogin(rp, s.issuer);
    const identifyPage = await (await l.agent.get(l.interactionPath)).text();
    expect(identifyPage).toContain(`href="${url(l)}"`);
    expect(identifyPage).toContain('ログインできない場合はこちら');
    const en = await startLogin(rp, s.issuer, { ui_locales: 'en' });
    expect(await (await en.agent.get(en.interactionPath)).text()).toContain("Can't log in?");
  });

  test('password account: code, loosely matched answer, new password; events and the notice mail are recorded', async () => {
    const u = await newAccount({ method: 'password_otp', answer: 'ポチ' });
    const oldHash = (await account(u.account.id)).passwordHash;
    const l = await startLogin(rp, s.issuer);

    const first = await open(l);
    expect(first.step).toBe('identify');
    expect(first.html).toContain('name="userId"');
    expect(first.html).toMatch(/<li aria-current="step">ユーザID入力<\/li>/);

    await throughCode(l, u);
    const question = await open(l);
    expect(question.step).toBe('question');
    expect(question.html).toContain('初めて飼ったペットの名前は？');
    expect(question.html).toContain('<label for="answer">');

    // Half-width katakana with a trailing space matches the registered 'ポチ'.
    const answered = await send(l, 'question', { answer: 'ﾎﾟﾁ ' });
    expect(answered.status).toBe(303);
    expect(stepAfter(answered)).toBe('password');

    // Password rules are the activation's: a mismatch and a common password are refused in place.
    const mismatch = await send(l, 'password', { password: NEW_PASSWORD, confirm: `${NEW_PASSWORD}x` });
    expect(mismatch.status).toBe(400);
    const mismatchHtml = await mismatch.text();
    expect(mismatchHtml).toContain('確認のために入力したパスワードが一致しません');
    expect(mismatchHtml).toMatch(/id="confirm"[^>]*aria-invalid="true"/);
    const common = await send(l, 'password', { password: 'password123', confirm: 'password123' });
    expect(common.status).toBe(400);
    expect(await common.text()).toMatch(/id="password"[^>]*aria-invalid="true"/);
    expect((await account(u.account.id)).passwordHash).toBe(oldHash);

    const before = s.smtp.messages.length;
    const set = await send(l, 'password', { password: NEW_PASSWORD, confirm: NEW_PASSWORD });
    expect(set.status).toBe(303);
    expect(stepAfter(set)).toBe('done');
    const done = await open(l);
    expect(done.html).toContain('パスワードを再設定しました');
    expect(done.html).toContain(`action="${l.interactionPath}/restart"`);

    const after = await account(u.account.id);
    expect(after.passwordHash).not.toBe(oldHash);
    expect(await verifySecret(NEW_PASSWORD, after.passwordHash)).toBe(true);
    expect(await verifySecret(OLD_PASSWORD, after.passwordHash)).toBe(false);
    expect(after.status).toBe('active');
    expect(await accountEvents(u.account.id)).toEqual(['password_reset', 'recovery_used']);

    const notice = await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= before && m.to.includes(u.email) && m.subject.includes('認証情報の再設定'));
    expect(notice.text).toContain('パスワードの再設定');
    expect(notice.text).toContain(u.userId);
    // No failures, so no login events; the recovery's audit trail is the account events.
    expect(await loginEvents(u.userId)).toEqual([]);

    // The flow is finished: replaying any step is refused.
    expect((await send(l, 'password', { password: NEW_PASSWORD, confirm: NEW_PASSWORD })).status).toBe(409);
    expect((await send(l, 'question', { answer: 'ポチ' })).status).toBe(409);
  });

  test('otp-only account: the right answer mails a fresh activation and puts the account back to pending', async () => {
    const u = await newAccount({ answer: 'Tama Chan' });
    const l = await startLogin(rp, s.issuer);
    await throughCode(l, u);
    const before = s.smtp.messages.length;
    // Full-width letters, other case and extra spaces still match.
    const answered = await send(l, 'question', { answer: '  ｔａｍａ　ＣＨＡＮ ' });
    expect(answered.status).toBe(303);
    expect(stepAfter(answered)).toBe('done');
    const done = await open(l);
    expect(done.html).toContain('初回認証をやり直す');
    expect(done.html).not.toContain('name="password"');

    expect((await account(u.account.id)).status).toBe('pending_activation');
    const activationMail = await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= before && m.to.includes(u.email) && m.subject.includes('初回認証のご案内'));
    expect(activationMail.text).toContain(`/activation/t1?user=${encodeURIComponent(u.userId)}`);
    const notice = await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= before && m.to.includes(u.email) && m.subject.includes('認証情報の再設定'));
    expect(notice.text).toContain('初回認証の再発行');
    expect(await accountEvents(u.account.id)).toEqual(['activation_issued', 'recovery_used']);
    const recoveryEvent = (await s.app.services.accountEvents.list(u.account.id)).find((e) => e.type === 'recovery_used')!;
    expect(recoveryEvent).toMatchObject({ actor: 'user', detail: { action: 'activation_issued' } });
    expect(recoveryEvent.sourceIp).toBeTruthy();
  });

  test('the question is shown in the user language', async () => {
    const u = await newAccount();
    const l = await startLogin(rp, s.issuer, { ui_locales: 'en' });
    await throughCode(l, u);
    const page = await open(l);
    expect(page.html).toContain('What was the name of your first pet?');
    expect(page.html).toContain('<html lang="en">');
  });

  test('wrong answers count towards the lockout and lock at the threshold; then even the right answer is refused', async () => {
    const u = await newAccount({ answer: 'ポチ' });
    const l = await startLogin(rp, s.issuer);
    await throughCode(l, u);

    const wrong = await send(l, 'question', { answer: 'タマ' });
    expect(wrong.status).toBe(401);
    const html = await wrong.text();
    expect(html).toContain('秘密の質問答えが一致しません');
    expect(html).toMatch(/id="answer"[^>]*aria-invalid="true"/);
    expect(html).toContain('初めて飼ったペットの名前は？');
    expect((await account(u.account.id)).failedAttempts).toBe(1);
    const [event] = await loginEvents(u.userId);
    expect(event).toMatchObject({ result: 'wrong_answer', method: 'recovery', clientId: 'rp-basic', accountId: u.account.id });

    for (let i = 2; i <= 4; i++) expect((await send(l, 'question', { answer: `タマ${i}` })).status).toBe(401);
    const locked = await send(l, 'question', { answer: 'タマ5' });
    expect(locked.status).toBe(403);
    expect(await locked.text()).toContain('アカウントをロックしました');
    const after = await account(u.account.id);
    expect(after.lockedAt).not.toBeNull();
    expect(after.failedAttempts).toBe(5);
    await s.smtp.waitFor((m) => m.to.includes(u.email) && m.subject.includes('ロック'));

    expect((await send(l, 'question', { answer: 'ポチ' })).status).toBe(403);
    expect((await loginEvents(u.userId)).map((e) => e.result)).toEqual(['wrong_answer', 'wrong_answer', 'wrong_answer', 'wrong_answer', 'locked', 'locked']);
    expect(await accountEvents(u.account.id)).not.toContain('recovery_used');

    // A locked account walks the same first pages, but gets no code by mail.
    const before = s.smtp.messages.length;
    const again = await startLogin(rp, s.issuer);
    const identified = await send(again, 'identify', { userId: u.userId });
    expect(stepAfter(identified)).toBe('code');
    expect((await send(again, 'code', { otp: '12345678' })).status).toBe(403);
    expect((await mailedBeforeMarker(s, u.email, before)).filter((m) => m.to.includes(u.email))).toHaveLength(0);
  });

  test('wrong codes count towards the same lockout as the login', async () => {
    const u = await newAccount();
    const l = await startLogin(rp, s.issuer);
    const sent = s.smtp.messages.length;
    expect((await send(l, 'identify', { userId: u.userId })).status).toBe(303);
    const recoveryOtp = await s.smtp.otpFor(u.email, sent);
    const res = await send(l, 'code', { otp: '12345678' });
    expect(res.status).toBe(401);
    const html = await res.text();
    expect(html).toContain('認証に失敗しました');
    expect(html).toMatch(/id="otp"[^>]*aria-invalid="true"/);
    expect((await account(u.account.id)).failedAttempts).toBe(1);
    expect((await loginEvents(u.userId)).map((e) => [e.result, e.method])).toEqual([['wrong_otp', 'recovery']]);
    expect((await open(l)).step).toBe('code');
    // A login code is no recovery code: a code of the login flow does not pass here.
    const before = s.smtp.messages.length;
    // (Another agent: this test client keeps one interaction cookie per name, whatever its path.)
    const login = await startLogin(rp, s.issuer);
    await (await login.agent.get(login.interactionPath)).text();
    await login.agent.post(`${login.interactionPath}/identify`, { _csrf: login.agent.cookies.get('csrf')!, userId: u.userId });
    const loginOtp = await s.smtp.otpFor(u.email, before);
    expect(loginOtp).not.toBe(recoveryOtp);
    expect((await send(l, 'code', { otp: loginOtp })).status).toBe(401);
    expect((await account(u.account.id)).failedAttempts).toBe(2);
    // Malformed input is refused without counting.
    expect((await send(l, 'code', { otp: 'abc' })).status).toBe(400);
    expect((await account(u.account.id)).failedAttempts).toBe(2);
  });

  test('an unknown user ID gets the same pages as a known one, and no mail', async () => {
    const known = await newAccount();
    const ghost = uniqueUser('ghost');
    const before = s.smtp.messages.length;

    async function codePage(userId: string) {
      const l = await startLogin(rp, s.issuer);
      const res = await send(l, 'identify', { userId });
      expect(res.status).toBe(303);
      expect(stepAfter(res)).toBe('code');
      const page = await open(l);
      const wrong = await send(l, 'code', { otp: '12345678' });
      const strip = (html: string) => html.replaceAll(l.uid, 'UID').replaceAll(userId, 'USER').replace(/value="[A-Za-z0-9_-]{43}"/g, 'value="CSRF"');
      return { page: strip(page.html), status: wrong.status, error: strip(await wrong.text()) };
    }
    const a = await codePage(known.userId);
    const b = await codePage(ghost.userId);
    expect(b.page).toBe(a.page);
    expect(b.status).toBe(401);
    expect(b.error).toBe(a.error);
    expect((await loginEvents(ghost.userId)).map((e) => e.result)).toEqual(['unknown_user']);
    await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= before && m.to.includes(known.email));
    const sent = await mailedBeforeMarker(s, ghost.email, before);
    expect(sent.filter((m) => m.to.some((t) => t.includes(ghost.userId)) || m.text.includes(ghost.userId))).toHaveLength(0);
  });

  test('steps cannot be skipped or taken out of order', async () => {
    const u = await newAccount({ method: 'password' });
    const oldHash = (await account(u.account.id)).passwordHash;
    const l = await startLogin(rp, s.issuer);
    await open(l);
    // Straight to a later step from the start.
    expect((await send(l, 'question', { answer: 'ポチ' })).status).toBe(409);
    expect((await send(l, 'password', { password: NEW_PASSWORD, confirm: NEW_PASSWORD })).status).toBe(409);
    expect((await send(l, 'code', { otp: '12345678' })).status).toBe(409);
    // A later step's page leads back to where the flow is.
    const jump = await l.agent.get(url(l, '/password'));
    expect(jump.status).toBe(303);
    expect(jump.headers.get('location')).toBe(url(l, '/identify'));
    expect((await l.agent.get(url(l, '/nowhere'))).status).toBe(404);

    // After the user ID, the answer and the password still wait for the code.
    expect((await send(l, 'identify', { userId: u.userId })).status).toBe(303);
    expect((await send(l, 'question', { answer: 'ポチ' })).status).toBe(409);
    expect((await send(l, 'password', { password: NEW_PASSWORD, confirm: NEW_PASSWORD })).status).toBe(409);
    expect((await send(l, 'identify', { userId: u.userId })).status).toBe(409);
    expect((await account(u.account.id)).passwordHash).toBe(oldHash);
    expect(await accountEvents(u.account.id)).toEqual([]);

    // Another interaction's recovery is out of reach without that interaction's cookie.
    const other = await startLogin(rp, s.issuer);
    await open(other);
    const foreign = await l.agent.post(url(other, '/identify'), { _csrf: l.agent.cookies.get('csrf')!, userId: u.userId });
    expect(foreign.status).toBe(400);
    expect(await foreign.text()).toContain('有効期限が切れました');
  });

  test('an account without a secret question is told to contact the site', async () => {
    const u = await newAccount({ answer: null });
    const l = await startLogin(rp, s.issuer);
    await throughCode(l, u);
    const page = await open(l);
    expect(page.html).toContain('秘密の質問が登録されていない');
    expect(page.html).toContain('サポート窓口');
    expect(page.html).not.toContain('name="answer"');
    const res = await send(l, 'question', { answer: 'ポチ' });
    expect(res.status).toBe(409);
    expect((await account(u.account.id)).failedAttempts).toBe(0);
  });

  test('resend and restart work; an account not yet activated is sent to its activation URL', async () => {
    const u = await newAccount();
    const l = await startLogin(rp, s.issuer);
    let before = s.smtp.messages.length;
    await send(l, 'identify', { userId: u.userId });
    const first = await s.smtp.otpFor(u.email, before);
    before = s.smtp.messages.length;
    const resent = await send(l, 'resend');
    expect(resent.status).toBe(303);
    expect(resent.headers.get('location')).toBe(url(l, '/code?resent=1'));
    const second = await s.smtp.otpFor(u.email, before);
    // Only the newest code counts.
    if (second !== first) expect((await send(l, 'code', { otp: first })).status).toBe(401);
    expect((await send(l, 'restart')).status).toBe(303);
    expect((await open(l)).step).toBe('identify');

    const pending = uniqueUser('pend');
    await s.app.services.accounts.create({ tenantId: 't1', userId: pending.userId, status: 'pending_activation', devices: [{ email: pending.email }] });
    // Told only after a code, like the login: the user-ID step answers as for anyone.
    expect((await send(l, 'identify', { userId: pending.userId })).status).toBe(303);
    const res = await send(l, 'code', { otp: '12345678' });
    expect(res.status).toBe(403);
    expect(await res.text()).toContain('初回認証');
  });

  test('English pages and a field error without JavaScript', async () => {
    const agent = new Agent(s.issuer);
    const l = await startLogin(rp, s.issuer, { ui_locales: 'en' }, agent);
    const page = await open(l);
    expect(page.html).toContain('Reset your login details');
    const res = await send(l, 'identify', { userId: '' });
    expect(res.status).toBe(400);
    const html = await res.text();
    expect(html).toContain('Please enter your user ID.');
    expect(html).toMatch(/id="userId"[^>]*aria-invalid="true"[^>]*aria-describedby="recovery-error"/);
  });
});
