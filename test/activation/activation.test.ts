import * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { verifySecret } from '../../src/credentials/hashing.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { Agent, csrfOf, discover, followToCallback, startLogin, submit } from '../support/browser-less.js';

// t1 as in the harness, but its contract also allows password_otp, so a password can be registered.
const TENANTS_YAML = TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, password_otp]');
const MISMATCH = 'ワンタイムパスワードが一致しません';
const LOCKED = 'アカウントをロックしました';
const GOOD_PASSWORD = 'Kumo-no-ue 42 hikouki';

describe('activation (初回認証 → 認証情報登録 → 認証情報登録完了)', () => {
  let s: TestServer;
  let rp: oidc.Configuration;

  beforeAll(async () => {
    expect(TENANTS_YAML).not.toBe(TEST_TENANTS_YAML);
    s = await startTestServer({ tenants: parseTenants('activation test tenants', TENANTS_YAML) });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    await s?.close();
  });

  /** A new account waiting for activation, with the URL and code the management side hands out. */
  async function newPending(loginMethod?: string) {
    const u = uniqueUser('act');
    const { account, activation } = await s.app.services.accountService.create('t1', { userId: u.userId, devices: [{ email: u.email }], loginMethod }, { actor: 'api' });
    const url = new URL(activation.url);
    return { ...u, account, otp: activation.otp, url, path: url.pathname + url.search };
  }

  /** Opens the 初回認証 page and submits user ID and code; returns the response and the agent. */
  async function verify(path: string, userId: string, otp: string, agent = new Agent(s.issuer)) {
    const page = await agent.get(path);
    expect(page.status).toBe(200);
    const res = await agent.post(new URL(path, s.issuer).pathname, { _csrf: csrfOf(await page.text()), userId, otp });
    return { res, agent };
  }

  /** Opens 認証情報登録 (the agent carries the step-1 cookie) and submits the form. */
  async function register(agent: Agent, fields: Record<string, string>) {
    const page = await agent.get('/activation/t1/register');
    expect(page.status).toBe(200);
    return agent.post('/activation/t1/register', { _csrf: csrfOf(await page.text()), ...fields });
  }

  const wrong = (otp: string) => otp.slice(0, -1) + String((Number(otp.at(-1)) + 1) % 10);
  const loginEvents = (userId: string) => s.db.prisma.loginEvent.findMany({ where: { submittedUserId: userId }, orderBy: { createdAt: 'asc' } });
  const fresh = async (id: string) => (await s.app.services.accounts.findById(id))!;

  test('the activation URL opens 初回認証 with the step indicator, the manual lead and the user ID filled in', async () => {
    const u = await newPending();
    expect(u.url.origin).toBe(s.issuer);
    expect(u.url.pathname).toBe('/activation/t1');
    const res = await new Agent(s.issuer).get(u.path);
    expect(res.status).toBe(200);
    const html = await res.text();
    expect(html).toMatch(/<li aria-current="step">初回認証/);
    expect(html).toMatch(/<li>認証情報登録/);
    expect(html).toMatch(/<li>認証情報登録完了/);
    expect(html).toContain('お客様のログインに使用する認証情報を登録します。お客様に送られたワンタイムパスワードを入力し、認証情報登録画面に進んでください。');
    expect(html).toContain(`id="userId" type="text" name="userId" value="${u.userId}"`);
    expect(html).toContain('<label for="otp">ワンタイムパスワード</label>');
    expect(html).toMatch(/<button type="submit">次へ<\/button>/);
    expect(res.headers.get('cache-control')).toBe('no-store');

    const en = await (await new Agent(s.issuer).get(`${u.path}&lang=en`)).text();
    expect(en).toContain('<html lang="en">');
    expect(en).toContain('Please enter the one-time password that was sent to you');
    expect(en).toMatch(/<li aria-current="step">First-time authentication/);
  });

  test('an unknown tenant is a 404 page', async () => {
    const res = await new Agent(s.issuer).get('/activation/nope?user=x');
    expect(res.status).toBe(404);
    expect(await res.text()).toContain('ページが見つかりません');
  });

  test('full activation of an OTP account: secret question only, then an OIDC login with openid-client', async () => {
    const u = await newPending();
    const { res, agent } = await verify(u.path, u.userId, u.otp);
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe('/activation/t1/register');
    const setCookie = res.headers.getSetCookie().find((c) => c.startsWith('activation='))!;
    expect(setCookie).toMatch(/httponly/i);
    expect(setCookie).toMatch(/path=\/activation/i);
    expect(setCookie).toMatch(/samesite=lax/i);
    expect(agent.cookies.has('activation.sig')).toBe(true);

    const page = await (await agent.get('/activation/t1/register')).text();
    expect(page).toMatch(/<li aria-current="step">認証情報登録/);
    expect(page).toContain('お客様のログインに使用する認証情報を入力してください。認証情報をお忘れの際に確認するための秘密の質問を選択し、その答えを入力してください。');
    expect(page).toContain(`<dd>${u.userId}</dd>`);
    expect(page).toContain('<option value="first_pet">初めて飼ったペットの名前は？</option>');
    expect(page).toContain('秘密の質問答え');
    expect(page).not.toContain('name="password"');
    expect(page).toMatch(/<button type="submit">登録<\/button>/);

    const mailsBefore = s.smtp.messages.length;
    const done = await agent.post('/activation/t1/register', { _csrf: csrfOf(page), questionId: 'first_pet', answer: ' Ｐｏｃｈｉ ' });
    expect(done.status).toBe(303);
    expect(done.headers.get('location')).toBe('/activation/t1/done');
    expect(agent.cookies.has('activation')).toBe(false);
    const last = await agent.get('/activation/t1/done');
    expect(last.status).toBe(200);
    const lastHtml = await last.text();
    expect(lastHtml).toContain('認証情報の登録が完了しました。ご利用のWebサイトにアクセスしてください。');
    expect(lastHtml).toMatch(/<li aria-current="step">認証情報登録完了/);

    const account = await fresh(u.account.id);
    expect(account.status).toBe('active');
    expect(account.secretQuestionId).toBe('first_pet');
    expect(account.secretAnswerHash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(await verifySecret('pochi', account.secretAnswerHash)).toBe(true); // stored normalised
    expect(account.passwordHash).toBeNull();
    const audit = await s.db.prisma.accountEvent.findMany({ where: { accountId: u.account.id }, orderBy: { createdAt: 'asc' } });
    expect(audit.map((e) => e.type)).toEqual(['created', 'activation_issued', 'activation_completed']);
    const notice = await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= mailsBefore && m.to.includes(u.email));
    expect(notice.text).toContain(u.userId);

    // Now the account signs in like any other.
    const before = s.smtp.messages.length;
    const login = await startLogin(rp, s.issuer);
    expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
    const otp = await s.smtp.otpFor(u.email, before);
    const res2 = await submit(login, 'otp', { otp });
    expect(res2.status).toBe(303);
    const callback = await followToCallback(login.agent, res2);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    expect(tokens.claims()).toMatchObject({ sub: u.account.id, preferred_username: u.userId });
  });

  test('a pending account cannot log in: after its code the login page points to the activation URL and says no more', async () => {
    const u = await newPending();
    const login = await startLogin(rp, s.issuer);
    // The user-ID step answers as for anyone (nobody learns there whether the ID exists).
    expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
    const res = await submit(login, 'otp', { otp: u.otp });
    expect(res.status).toBe(403);
    const html = await res.text();
    expect(html).toContain('このアカウントは初回認証が済んでいません');
    expect(html).toContain('認証情報取得先URL');
    expect(html).not.toContain(u.otp);
    expect(html).not.toContain('/activation/');
  });

  test('a wrong code shows 「ワンタイムパスワードが一致しません」, keeps the user ID, counts and is in the history', async () => {
    const u = await newPending();
    const { res } = await verify(u.path, u.userId, wrong(u.otp));
    expect(res.status).toBe(401);
    const html = await res.text();
    expect(html).toContain(MISMATCH);
    expect(html).toContain(`name="userId" value="${u.userId}"`);
    expect(html).toMatch(/id="otp"[^>]*aria-invalid="true"[^>]*aria-describedby="form-error"/);
    expect(html).not.toContain(wrong(u.otp));
    expect(res.headers.get('location')).toBeNull();
    expect((await fresh(u.account.id)).failedAttempts).toBe(1);
    const events = await loginEvents(u.userId);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ accountId: u.account.id, tenantId: 't1', result: 'activation_failed', method: 'activation' });
    expect(events[0]!.sourceIp).toBeTruthy();

    // Full-width digits are what a Japanese IME gives; they are the same code.
    const fullWidth = u.otp.replace(/\d/g, (d) => String.fromCharCode(0xff10 + Number(d)));
    const ok = await verify(u.path, u.userId, fullWidth);
    expect(ok.res.status).toBe(303);
  });

  test('an unknown user ID gets the same mismatch page, recorded without an account', async () => {
    const u = uniqueUser('ghost');
    const { res } = await verify(`/activation/t1?user=${u.userId}`, u.userId, '12345678');
    expect(res.status).toBe(401);
    expect(await res.text()).toContain(MISMATCH);
    expect(await loginEvents(u.userId)).toEqual([expect.objectContaining({ accountId: null, result: 'activation_failed' })]);
  });

  test('missing fields are named next to the field', async () => {
    const u = await newPending();
    const { res } = await verify(u.path, u.userId, '');
    expect(res.status).toBe(400);
    const html = await res.text();
    expect(html).toContain('<p class="error" id="otp-error">ワンタイムパスワードを入力してください。</p>');
    expect(html).toMatch(/id="otp"[^>]*aria-invalid="true"[^>]*aria-describedby="otp-error"/);
    expect((await fresh(u.account.id)).failedAttempts).toBe(0);
  });

  test('an expired code has its own message and does not count towards the lock', async () => {
    const u = await newPending();
    await s.db.prisma.oneTimePassword.updateMany({ where: { accountId: u.account.id, purpose: 'activation' }, data: { expiresAt: new Date(Date.now() - 1000) } });
    const { res } = await verify(u.path, u.userId, u.otp);
    expect(res.status).toBe(400);
    const html = await res.text();
    expect(html).toContain('ワンタイムパスワードの有効期限が切れています');
    expect(html).not.toContain(MISMATCH);
    expect((await fresh(u.account.id)).failedAttempts).toBe(0);
    expect((await loginEvents(u.userId)).map((e) => e.result)).toEqual(['activation_failed']);
  });

  test('a used code is refused as a mismatch', async () => {
    const u = await newPending();
    const { agent } = await verify(u.path, u.userId, u.otp);
    expect((await register(agent, { questionId: 'birthplace', answer: 'Sapporo' })).status).toBe(303);
    const again = await verify(u.path, u.userId, u.otp);
    expect(again.res.status).toBe(401);
    expect(await again.res.text()).toContain(MISMATCH);
    // The registration step of the finished activation is gone as well.
    const stale = await new Agent(s.issuer).get('/activation/t1/register');
    expect(stale.status).toBe(400);
  });

  test('repeated wrong codes lock the account at the threshold (5); then even the right code shows the lock', async () => {
    const u = await newPending();
    for (let i = 0; i < 4; i++) expect((await verify(u.path, u.userId, wrong(u.otp))).res.status).toBe(401);
    const fifth = (await verify(u.path, u.userId, wrong(u.otp))).res;
    expect(fifth.status).toBe(403);
    const html = await fifth.text();
    expect(html).toContain(LOCKED);
    expect(html).not.toContain('name="otp"');
    const right = (await verify(u.path, u.userId, u.otp)).res;
    expect(right.status).toBe(403);
    expect(await right.text()).toContain(LOCKED);
    expect((await fresh(u.account.id)).lockedAt).not.toBeNull();
    expect((await loginEvents(u.userId)).map((e) => e.result)).toEqual([...Array(4).fill('activation_failed'), 'locked', 'locked']);
    // The user is told by mail, once.
    const lockMail = await s.smtp.waitFor((m) => m.to.includes(u.email) && m.subject.includes('ロック'));
    expect(lockMail.text).toContain(u.userId);
    expect(s.smtp.messages.filter((m) => m.to.includes(u.email) && m.subject.includes('ロック'))).toHaveLength(1);
  });

  test('an account locked before this activation (e.g. by wrong passwords) sees a lock page that blames no code', async () => {
    const u = await newPending();
    await s.app.services.lockout.registerFailure(u.account.id, { threshold: 1, duration_minutes: null });
    const again = await s.app.services.accountService.issueActivation('t1', u.userId, { actor: 'api' });
    for (const lang of ['ja', 'en']) {
      const agent = new Agent(s.issuer);
      agent.cookies.set('lang', lang);
      const { res } = await verify(u.path, u.userId, again.otp, agent);
      expect(res.status).toBe(403);
      const html = await res.text();
      expect(html).toContain(lang === 'ja' ? LOCKED : 'Your account has been locked');
      expect(html).not.toMatch(lang === 'ja' ? /ワンタイムパスワードの誤入力/ : /wrong one-time password/);
    }
  });

  test('a fresh activation retires the old code, also between step 1 and step 2', async () => {
    const u = await newPending();
    const first = await verify(u.path, u.userId, u.otp);
    expect(first.res.status).toBe(303);
    const second = await s.app.services.accountService.issueActivation('t1', u.userId, { actor: 'api' });
    expect(second.otp).not.toBe(u.otp);

    // Step 2 of the old code can no longer finish.
    const late = await register(first.agent, { questionId: 'birthplace', answer: 'Kobe' });
    expect(late.status).toBe(409);
    expect(await late.text()).toContain('使用済みか、無効になっています');
    expect((await fresh(u.account.id)).status).toBe('pending_activation');

    expect((await verify(u.path, u.userId, u.otp)).res.status).toBe(401);
    const ok = await verify(u.path, u.userId, second.otp);
    expect(ok.res.status).toBe(303);
    expect((await register(ok.agent, { questionId: 'birthplace', answer: 'Kobe' })).status).toBe(303);
    expect((await fresh(u.account.id)).status).toBe('active');
  });

  test('step 2 needs a valid signed cookie of the same tenant', async () => {
    const none = await new Agent(s.issuer).get('/activation/t1/register');
    expect(none.status).toBe(400);
    const html = await none.text();
    expect(html).toContain('有効期限が切れました');
    expect(html).toContain('href="/activation/t1"');

    const u = await newPending();
    const { agent } = await verify(u.path, u.userId, u.otp);
    const value = agent.cookies.get('activation')!;
    // Another tenant's page does not accept it.
    expect((await agent.get('/activation/t2/register')).status).toBe(400);
    // A forged value fails the signature (the cookie is cleared on the way).
    const forged = JSON.parse(Buffer.from(value, 'base64url').toString()) as { exp: number };
    agent.cookies.set('activation', Buffer.from(JSON.stringify({ ...forged, exp: forged.exp + 3600 })).toString('base64url'));
    expect((await agent.get('/activation/t1/register')).status).toBe(400);
    expect((await fresh(u.account.id)).status).toBe('pending_activation');
  });

  test('registration problems are shown at the field; the chosen question stays, the answer is not echoed', async () => {
    const u = await newPending();
    const { agent } = await verify(u.path, u.userId, u.otp);
    const noQuestion = await register(agent, { questionId: '', answer: 'x' });
    expect(noQuestion.status).toBe(400);
    const h1 = await noQuestion.text();
    expect(h1).toContain('<p class="error" id="questionId-error">秘密の質問を選択してください。</p>');
    expect(h1).toMatch(/<select id="questionId"[^>]*aria-invalid="true"[^>]*aria-describedby="questionId-error"/);

    const unknown = await register(agent, { questionId: 'favourite_colour', answer: 'x' });
    expect(await unknown.text()).toContain('秘密の質問は一覧から選択してください。');

    const noAnswer = await register(agent, { questionId: 'first_teacher', answer: '   ' });
    expect(noAnswer.status).toBe(400);
    const h2 = await noAnswer.text();
    expect(h2).toContain('秘密の質問答えを入力してください。');
    expect(h2).toContain('<option value="first_teacher" selected>');
    expect(h2).toMatch(/<input id="answer"[^>]*aria-invalid="true"[^>]*aria-describedby="answer-error answer-hint"[^>]*autofocus/);

    const long = await register(agent, { questionId: 'first_teacher', answer: 'あ'.repeat(101) });
    expect(await long.text()).toContain('秘密の質問答えは100文字以内で入力してください。');
    expect((await fresh(u.account.id)).status).toBe('pending_activation');
  });

  test('a password_otp account must set a password: common and short ones are refused, the hash is stored', async () => {
    const u = await newPending('password_otp');
    const { agent } = await verify(u.path, u.userId, u.otp);
    const page = await (await agent.get('/activation/t1/register')).text();
    expect(page).toContain('name="password"');
    expect(page).toContain('name="confirm"');
    expect(page).toContain('autocomplete="new-password"');

    const missing = await register(agent, { questionId: 'first_pet', answer: 'Tama' });
    expect(missing.status).toBe(400);
    expect(await missing.text()).toContain('パスワードを入力してください。');

    const common = await register(agent, { questionId: 'first_pet', answer: 'Tama', password: 'password1', confirm: 'password1' });
    expect(common.status).toBe(400);
    const h1 = await common.text();
    expect(h1).toContain('よく使われているパスワードのため使用できません');
    expect(h1).toMatch(/<input id="password"[^>]*aria-invalid="true"/);
    expect(h1).not.toContain('password1');
    expect(h1).not.toContain('Tama');
    expect(h1).toContain('<option value="first_pet" selected>');

    const short = await register(agent, { questionId: 'first_pet', answer: 'Tama', password: 'q7#Lm', confirm: 'q7#Lm' });
    expect(short.status).toBe(400);
    expect(await short.text()).toContain('パスワードは8文字以上で入力してください。');

    const withId = await register(agent, { questionId: 'first_pet', answer: 'Tama', password: `x${u.userId}!`, confirm: `x${u.userId}!` });
    expect(await withId.text()).toContain('ユーザIDを含むパスワードは使用できません。');

    const mismatch = await register(agent, { questionId: 'first_pet', answer: 'Tama', password: GOOD_PASSWORD, confirm: `${GOOD_PASSWORD}?` });
    const h2 = await mismatch.text();
    expect(h2).toContain('<p class="error" id="confirm-error">確認用のパスワードが一致しません。');
    expect(h2).not.toContain(GOOD_PASSWORD);
    expect((await fresh(u.account.id)).status).toBe('pending_activation');

    const ok = await register(agent, { questionId: 'first_pet', answer: 'Tama', password: GOOD_PASSWORD, confirm: GOOD_PASSWORD });
    expect(ok.status).toBe(303);
    const account = await fresh(u.account.id);
    expect(account.status).toBe('active');
    expect(account.passwordHash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(account.passwordHash).not.toContain(GOOD_PASSWORD);
    expect(await verifySecret(GOOD_PASSWORD, account.passwordHash)).toBe(true);
    expect(await verifySecret('password1', account.passwordHash)).toBe(false);
  });

  test('English pages and messages', async () => {
    const u = await newPending('password_otp');
    const agent = new Agent(s.issuer);
    const en = { 'accept-language': 'en' };
    const page = await agent.get(u.path, en);
    const bad = await agent.post('/activation/t1', { _csrf: csrfOf(await page.text()), userId: u.userId, otp: wrong(u.otp) }, en);
    expect(await bad.text()).toContain('The one-time password does not match');
    const p2 = await agent.get(u.path, en);
    expect((await agent.post('/activation/t1', { _csrf: csrfOf(await p2.text()), userId: u.userId, otp: u.otp }, en)).status).toBe(303);
    const reg = await (await agent.get('/activation/t1/register', en)).text();
    expect(reg).toContain('Choose a secret question');
    expect(reg).toContain('What was the name of your first pet?');
    const common = await agent.post('/activation/t1/register', { _csrf: csrfOf(reg), questionId: 'first_pet', answer: 'Tama', password: 'password1', confirm: 'password1' }, en);
    expect(await common.text()).toContain('This password is too commonly used and cannot be used');
  });

  test('posts without the CSRF token are refused', async () => {
    const u = await newPending();
    const agent = new Agent(s.issuer);
    await agent.get(u.path);
    const res = await agent.post('/activation/t1', { userId: u.userId, otp: u.otp });
    expect(res.status).toBe(403);
    expect((await fresh(u.account.id)).status).toBe('pending_activation');
  });
});
