import * as oidc from 'openid-client';
import { decodeJwt } from 'jose';
import { startTestServer, uniqueUser, REDIRECT_URI, POST_LOGOUT_URI, type TestServer } from '../support/harness.js';
import { Agent, csrfOf, discover, followToCallback, startLogin, submit, type StartedLogin } from '../support/browser-less.js';
import { mailedBeforeMarker } from '../support/mail-marker.js';

const databases = (process.env.TEST_DATABASES ?? 'postgres,pglite').split(',') as Array<'postgres' | 'pglite'>;

describe.each(databases)('login with e-mail one-time password (%s)', (database) => {
  let s: TestServer;
  let rp: oidc.Configuration;

  beforeAll(async () => {
    s = await startTestServer({ database });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    await s?.close();
  });

  async function newAccount(tenantId = 't1', devices = 1) {
    const u = uniqueUser();
    const emails = Array.from({ length: devices }, (_, i) => (i === 0 ? u.email : `${i}-${u.email}`));
    const account = await s.app.services.accounts.create({ tenantId, userId: u.userId, devices: emails.map((email) => ({ email })) });
    return { ...u, emails, account };
  }

  async function identify(login: StartedLogin, userId: string) {
    const res = await submit(login, 'identify', { userId });
    expect(res.status).toBe(303);
    return res;
  }

  async function events(userId: string) {
    return s.db.prisma.loginEvent.findMany({ where: { submittedUserId: userId }, orderBy: { createdAt: 'asc' } });
  }

  async function loginOnce(config = rp, user?: Awaited<ReturnType<typeof newAccount>>) {
    const u = user ?? (await newAccount());
    const before = s.smtp.messages.length;
    const login = await startLogin(config, s.issuer);
    await identify(login, u.userId);
    const otp = await s.smtp.otpFor(u.email, before);
    const res = await submit(login, 'otp', { otp });
    expect(res.status).toBe(303);
    const callback = await followToCallback(login.agent, res);
    const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    return { u, login, tokens };
  }

  test('a full login returns an ID token with the promised claims; userinfo, refresh and logout work', async () => {
    const u = await newAccount('t1', 2);
    const { login, tokens } = await loginOnce(rp, u);
    const claims = tokens.claims()!;
    expect(claims.sub).toBe(u.account.id);
    expect(claims.preferred_username).toBe(u.userId);
    expect(claims.email).toBe(u.email);
    expect(claims.amr).toEqual(['otp']);
    expect(claims.acr).toBe('urn:anshin-login:acr:otp');
    expect(typeof claims.auth_time).toBe('number');
    expect(Math.abs((claims.auth_time as number) - Date.now() / 1000)).toBeLessThan(60);
    // The code was mailed to every device address.
    expect(s.smtp.messages.filter((m) => m.to.includes(u.emails[1]!)).length).toBeGreaterThan(0);

    const info = await oidc.fetchUserInfo(rp, tokens.access_token, u.account.id);
    expect(info.preferred_username).toBe(u.userId);

    expect(tokens.refresh_token).toBeTruthy();
    const refreshed = await oidc.refreshTokenGrant(rp, tokens.refresh_token!);
    expect(refreshed.access_token).not.toBe(tokens.access_token);
    expect(decodeJwt(refreshed.id_token!).sub).toBe(u.account.id);

    const successes = (await events(u.userId)).filter((e) => e.result === 'success');
    expect(successes).toHaveLength(1);
    expect(successes[0]).toMatchObject({ clientId: 'rp-basic', method: 'otp', tenantId: 't1' });
    expect(successes[0]!.sourceIp).toBeTruthy();

    // RP-initiated logout: confirmation page, then back to the site; the session is gone.
    const end = oidc.buildEndSessionUrl(rp, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: POST_LOGOUT_URI });
    const confirm = await login.agent.get(end.pathname + end.search);
    expect(confirm.status).toBe(200);
    const html = await confirm.text();
    expect(html).toContain('ログアウトしますか');
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)![1]!;
    const done = await login.agent.post('/session/end/confirm', { xsrf, logout: 'yes' });
    expect(done.status).toBe(303);
    expect(done.headers.get('location')).toMatch(new RegExp(`^${POST_LOGOUT_URI}`));
    const again = await startLogin(rp, s.issuer, {}, login.agent);
    const page = await (await login.agent.get(again.interactionPath)).text();
    expect(page).toContain('name="userId"');
  });

  test('client_secret_post and public clients (PKCE) complete the flow', async () => {
    const post = await discover(s.issuer, 'rp-post', 'rp-post-secret-0123456789', 'post');
    const { tokens } = await loginOnce(post);
    expect(tokens.id_token).toBeTruthy();
    const pub = await discover(s.issuer, 'rp-public');
    const r = await loginOnce(pub);
    expect(r.tokens.access_token).toBeTruthy();
  });

  test('a wrong code shows 認証に失敗しました with a way back, records the event, and issues nothing', async () => {
    const u = await newAccount();
    const login = await startLogin(rp, s.issuer);
    await identify(login, u.userId);
    const res = await submit(login, 'otp', { otp: '12345678' });
    expect(res.status).toBe(401);
    const html = await res.text();
    expect(html).toContain('認証に失敗しました');
    expect(html).toContain(`href="${login.interactionPath}"`);
    expect(res.headers.get('location')).toBeNull();
    expect((await events(u.userId)).map((e) => e.result)).toEqual(['wrong_otp']);
    const acc = await s.app.services.accounts.findById(u.account.id);
    expect(acc!.failedAttempts).toBe(1);
  });

  test('an expired code is refused with its own message and does not count as a failure', async () => {
    const u = await newAccount();
    const before = s.smtp.messages.length;
    const login = await startLogin(rp, s.issuer);
    await identify(login, u.userId);
    const otp = await s.smtp.otpFor(u.email, before);
    await s.db.prisma.oneTimePassword.updateMany({ where: { accountId: u.account.id }, data: { expiresAt: new Date(Date.now() - 1000) } });
    const res = await submit(login, 'otp', { otp });
    expect(res.status).toBe(401);
    expect(await res.text()).toContain('有効期限が切れています');
    expect((await events(u.userId)).map((e) => e.result)).toEqual(['expired_otp']);
  });

  test('a code cannot be used twice, nor in another login', async () => {
    const u = await newAccount();
    const { login } = await loginOnce(rp, u);
    const otpMail = s.smtp.messages.filter((m) => m.to.includes(u.email)).at(-1)!;
    const usedOtp = /\b(\d{8})\b/.exec(otpMail.text)![1]!;
    // The finished interaction is gone: replaying the form is a clear 4xx.
    const replay = await login.agent.post(`${login.interactionPath}/otp`, { _csrf: login.agent.cookies.get('csrf')!, otp: usedOtp });
    expect(replay.status).toBe(400);
    expect(await replay.text()).toContain('有効期限が切れました');
    // In a new login the old code is simply wrong.
    const second = await startLogin(rp, s.issuer);
    await identify(second, u.userId);
    const res = await submit(second, 'otp', { otp: usedOtp });
    expect(res.status).toBe(401);
    expect((await events(u.userId)).map((e) => e.result)).toEqual(['success', 'wrong_otp']);
  });

  test("another login's code does not work in this one", async () => {
    const u = await newAccount();
    const before = s.smtp.messages.length;
    const a = await startLogin(rp, s.issuer);
    await identify(a, u.userId);
    const otpA = await s.smtp.otpFor(u.email, before);
    const b = await startLogin(rp, s.issuer);
    await identify(b, u.userId);
    const res = await submit(b, 'otp', { otp: otpA });
    expect(res.status).toBe(401);
    expect((await events(u.userId)).map((e) => e.result)).toEqual(['wrong_otp']);
    // ...and flow A's code still works in flow A.
    const ok = await submit(a, 'otp', { otp: otpA });
    expect(ok.status).toBe(303);
  });

  test('an unknown user ID gets the same page as a known one, no mail, and fails at the code', async () => {
    const u = uniqueUser('ghost');
    const before = s.smtp.messages.length;
    const login = await startLogin(rp, s.issuer);
    await identify(login, u.userId);
    const page = await (await login.agent.get(login.interactionPath)).text();
    expect(page).toContain('name="otp"');
    const res = await submit(login, 'otp', { otp: '12345678' });
    expect(res.status).toBe(401);
    expect(await res.text()).toContain('認証に失敗しました');
    expect((await events(u.userId)).map((e) => e.result)).toEqual(['unknown_user']);
    const sent = await mailedBeforeMarker(s, u.email, before);
    expect(sent.filter((m) => m.to.some((t) => t.includes(u.userId)))).toHaveLength(0);
  });

  test('a user ID of another tenant is unknown here; a session does not cross tenants', async () => {
    const u = await newAccount('t1');
    const other = await discover(s.issuer, 'rp-t2', 'rp-t2-secret-01234567890');
    const login = await startLogin(other, s.issuer);
    await identify(login, u.userId);
    const res = await submit(login, 'otp', { otp: '12345678' });
    expect(res.status).toBe(401);
    // A t1 session reaching a t2 client is asked to log in again instead of passing silently.
    const { login: signedIn } = await loginOnce(rp, u);
    const again = await startLogin(other, s.issuer, {}, signedIn.agent);
    const page = await (await signedIn.agent.get(again.interactionPath)).text();
    expect(page).toContain('name="userId"');
  });

  test('repeated wrong codes lock the account at the threshold; then even the right code is refused until unlocked', async () => {
    const u = await newAccount();
    const before = s.smtp.messages.length;
    const first = await startLogin(rp, s.issuer);
    await identify(first, u.userId);
    const rightOtp = await s.smtp.otpFor(u.email, before);
    const login = await startLogin(rp, s.issuer);
    await identify(login, u.userId);
    for (let i = 1; i <= 4; i++) expect((await submit(login, 'otp', { otp: '11111111' })).status).toBe(401);
    const locked = await submit(login, 'otp', { otp: '11111111' });
    expect(locked.status).toBe(403);
    expect(await locked.text()).toContain('アカウントをロックしました');
    const lockMail = await s.smtp.waitFor((m) => m.to.includes(u.email) && m.subject.includes('ロック'));
    expect(lockMail).toBeTruthy();
    const refused = await submit(first, 'otp', { otp: rightOtp });
    expect(refused.status).toBe(403);
    expect((await events(u.userId)).map((e) => e.result)).toEqual(['wrong_otp', 'wrong_otp', 'wrong_otp', 'wrong_otp', 'locked', 'locked']);
    expect(await s.app.services.lockout.unlock('t1', u.userId)).toBe(true);
    await loginOnce(rp, u);
  });

  test('50 parallel wrong codes lock at exactly the threshold and a right code afterwards gets nothing', async () => {
    const u = await newAccount();
    const before = s.smtp.messages.length;
    const held = await startLogin(rp, s.issuer);
    await identify(held, u.userId);
    const rightOtp = await s.smtp.otpFor(u.email, before);
    const attack = await startLogin(rp, s.issuer);
    await identify(attack, u.userId);
    const html = await (await attack.agent.get(attack.interactionPath)).text();
    const token = csrfOf(html);
    const statuses = await Promise.all(
      Array.from({ length: 50 }, (_, i) => attack.agent.post(`${attack.interactionPath}/otp`, { _csrf: token, otp: String(10000000 + i) }).then((r) => r.status)),
    );
    expect(statuses.every((st) => st === 401 || st === 403)).toBe(true);
    const account = await s.app.services.accounts.findById(u.account.id);
    expect(account!.failedAttempts).toBe(5);
    expect(account!.lockedAt).not.toBeNull();
    const wrong = (await events(u.userId)).filter((e) => e.result === 'wrong_otp');
    expect(wrong).toHaveLength(4);
    const res = await submit(held, 'otp', { otp: rightOtp });
    expect(res.status).toBe(403);
    expect(res.headers.get('location')).toBeNull();
  });
});

describe('deployment options and bad input', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ env: { REVEAL_UNKNOWN_USER: 'true' } });
  });
  afterAll(async () => {
    await s?.close();
  });

  test('REVEAL_UNKNOWN_USER shows the manual page ワンタイムパスワードが送信できませんでした', async () => {
    const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const login = await startLogin(rp, s.issuer);
    const res = await submit(login, 'identify', { userId: 'nobody-here' });
    expect(res.status).toBe(400);
    const html = await res.text();
    expect(html).toContain('ワンタイムパスワードが送信できませんでした');
    expect(html).toContain('ログインページに戻る');
    const ev = await s.db.prisma.loginEvent.findMany({ where: { submittedUserId: 'nobody-here' } });
    expect(ev.map((e) => e.result)).toEqual(['unknown_user']);
  });

  test('missing, oversized and malformed fields, a bad CSRF token and unknown interactions give clear 4xx pages', async () => {
    const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const login = await startLogin(rp, s.issuer);
    const page = await (await login.agent.get(login.interactionPath)).text();
    const token = csrfOf(page);
    const check = async (res: Response, status: number, text?: string) => {
      expect(res.status).toBe(status);
      const html = await res.text();
      if (text) expect(html).toContain(text);
      expect(html).toContain('<html');
    };
    await check(await login.agent.post(`${login.interactionPath}/identify`, { _csrf: token }), 400, 'ユーザIDを入力してください');
    await check(await login.agent.post(`${login.interactionPath}/identify`, { _csrf: token, userId: 'x'.repeat(65) }), 400, '64文字以内');
    await check(await login.agent.post(`${login.interactionPath}/identify`, { _csrf: token, userId: 'x'.repeat(40_000) }), 413);
    const arr = await login.agent.request('POST', `${login.interactionPath}/identify`, undefined, { 'content-type': 'application/x-www-form-urlencoded' });
    expect(arr.status).toBe(403); // no body at all: no CSRF token
    const malformed = await fetch(new URL(`${login.interactionPath}/identify`, s.issuer), {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: [...login.agent.cookies].map(([k, v]) => `${k}=${v}`).join('; '), 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' },
      body: `_csrf=${token}&userId[]=a&userId[]=b`,
    });
    expect(malformed.status).toBe(400);
    await check(await login.agent.post(`${login.interactionPath}/identify`, { _csrf: 'forged', userId: 'someone' }), 403, '不正な送信');
    await check(await login.agent.post(`${login.interactionPath}/otp`, { _csrf: token, otp: 'abc' }), 400);
    await check(await login.agent.get('/interaction/unknown-interaction-uid'), 400, '有効期限が切れました');
    await check(await new Agent(s.issuer).get(login.interactionPath), 400, '有効期限が切れました');
    const json = await login.agent.post(`${login.interactionPath}/identify`, { _csrf: token }, { 'content-type': 'application/json' });
    expect(json.status).toBeGreaterThanOrEqual(400);
    expect(json.status).toBeLessThan(500);
    await check(await login.agent.get('/no-such-page'), 404);
  });

  test('third-party clients ask for consent; first-party ones do not', async () => {
    const third = await discover(s.issuer, 'rp-third', 'rp-third-secret-0123456789');
    const u = uniqueUser('consent');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    const before = s.smtp.messages.length;
    const login = await startLogin(third, s.issuer);
    await submit(login, 'identify', { userId: u.userId });
    const otp = await s.smtp.otpFor(u.email, before);
    const afterOtp = await submit(login, 'otp', { otp });
    expect(afterOtp.status).toBe(303);
    // Resume → consent interaction.
    const resume = await login.agent.get(new URL(afterOtp.headers.get('location')!, s.issuer).pathname);
    const consentPath = new URL(resume.headers.get('location')!, s.issuer).pathname;
    const consentPage = await (await login.agent.get(consentPath)).text();
    expect(consentPage).toContain('情報提供の確認');
    const granted = await login.agent.post(`${consentPath}/consent`, { _csrf: csrfOf(consentPage) });
    const cb = await followToCallback(login.agent, granted);
    expect(cb.searchParams.get('code')).toBeTruthy();
    expect(cb.href.startsWith(REDIRECT_URI)).toBe(true);
  });
});
