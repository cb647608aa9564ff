import * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { hashSecret } from '../../src/credentials/hashing.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { discover, followToCallback, startLogin, submit } from '../support/browser-less.js';
import { mailedBeforeMarker } from '../support/mail-marker.js';

const PASSWORD = 'kiri-no-naka-no-fune-42';

describe('password factor (password and password + OTP methods)', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  beforeAll(async () => {
    const tenants = parseTenants('t', TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, password, password_otp]'));
    s = await startTestServer({ tenants });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    await s?.close();
  });

  async function account(loginMethod: string) {
    const u = uniqueUser('pw');
    const a = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, loginMethod, devices: [{ email: u.email }] });
    await s.app.services.accounts.setPassword(a.id, await hashSecret(PASSWORD));
    return { ...u, id: a.id };
  }

  test('password only: the ID token says pwd', async () => {
    const u = await account('password');
    const login = await startLogin(rp, s.issuer);
    await submit(login, 'identify', { userId: u.userId });
    const page = await (await login.agent.get(login.interactionPath)).text();
    expect(page).toContain('type="password"');
    const res = await submit(login, 'password', { password: PASSWORD });
    const cb = await followToCallback(login.agent, res);
    const tokens = await oidc.authorizationCodeGrant(rp, cb, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    expect(tokens.claims()).toMatchObject({ amr: ['pwd'], acr: 'urn:anshin-login:acr:password', preferred_username: u.userId });
  });

  test('password + OTP: both steps, in order; amr pwd and otp', async () => {
    const u = await account('password_otp');
    const login = await startLogin(rp, s.issuer);
    const before = s.smtp.messages.length;
    await submit(login, 'identify', { userId: u.userId });
    // No code is mailed before the password is right.
    expect((await mailedBeforeMarker(s, u.email, before)).filter((m) => m.to.includes(u.email))).toHaveLength(0);
    const beforePassword = s.smtp.messages.length;
    expect((await submit(login, 'otp', { otp: '12345678' })).status).toBe(400);
    const afterPassword = await submit(login, 'password', { password: PASSWORD });
    expect(afterPassword.status).toBe(303);
    const otp = await s.smtp.otpFor(u.email, beforePassword);
    const res = await submit(login, 'otp', { otp });
    const cb = await followToCallback(login.agent, res);
    const tokens = await oidc.authorizationCodeGrant(rp, cb, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    expect(tokens.claims()).toMatchObject({ amr: ['pwd', 'otp'], acr: 'urn:anshin-login:acr:password-otp' });
  });

  test('wrong passwords count towards the same lockout as wrong codes', async () => {
    const u = await account('password_otp');
    const before = s.smtp.messages.length;
    const first = await startLogin(rp, s.issuer);
    await submit(first, 'identify', { userId: u.userId });
    for (let i = 0; i < 2; i++) expect((await submit(first, 'password', { password: 'wrong-password-x' })).status).toBe(401);
    expect((await submit(first, 'password', { password: PASSWORD })).status).toBe(303);
    await s.smtp.otpFor(u.email, before);
    for (let i = 0; i < 2; i++) expect((await submit(first, 'otp', { otp: '11111111' })).status).toBe(401);
    const locked = await submit(first, 'otp', { otp: '11111111' });
    expect(locked.status).toBe(403);
    const events = await s.db.prisma.loginEvent.findMany({ where: { submittedUserId: u.userId }, orderBy: { createdAt: 'asc' } });
    expect(events.map((e) => e.result)).toEqual(['wrong_password', 'wrong_password', 'wrong_otp', 'wrong_otp', 'locked']);
  });

  test('wrong passwords lock a password account with a page about the password, not the one-time password', async () => {
    for (const lang of ['ja', 'en'] as const) {
      const u = await account('password');
      const login = await startLogin(rp, s.issuer);
      login.agent.cookies.set('lang', lang);
      await submit(login, 'identify', { userId: u.userId });
      for (let i = 0; i < 4; i++) expect((await submit(login, 'password', { password: 'wrong-password-x' })).status).toBe(401);
      const locked = await submit(login, 'password', { password: 'wrong-password-x' });
      expect(locked.status).toBe(403);
      const page = await locked.text();
      expect(page).toContain(lang === 'ja' ? '】 パスワードの誤入力が繰り返されたため、アカウントをロックしました' : 'a wrong password was entered too many times');
      // Later tries of the locked account: the cause is not known any more, so the page names none.
      const later = await submit(login, 'password', { password: PASSWORD });
      expect(later.status).toBe(403);
      for (const text of [page, await later.text()]) {
        expect(text).toContain(lang === 'ja' ? 'アカウントをロックしました' : 'Your account has been locked');
        expect(text).not.toMatch(lang === 'ja' ? /ワンタイムパスワード/ : /one-time password/i);
      }
    }
  });
});
