import * as oidc from 'openid-client';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { Agent, csrfOf, discover, followToCallback, startLogin, submit, type StartedLogin } from '../support/browser-less.js';
import { ConfigError, parseTenants } from '../../src/config/tenants.js';
import { toView } from '../../src/account/account.service.js';
import { formatEventTime } from '../../src/history/event-time.js';

const THRESHOLD = 3;
const DURATION_MINUTES = 15;

/** t1 locks for 15 minutes after 3 failures; t2 keeps the default (permanent, 5). */
const TENANTS_YAML = TEST_TENANTS_YAML.replace('lockout_threshold: 5', `lockout: { threshold: ${THRESHOLD}, duration_minutes: ${DURATION_MINUTES} }`);

describe('the contract’s lockout keys', () => {
  const withContract = (contract: string) => TEST_TENANTS_YAML.replace('lockout_threshold: 5', contract);

  test('without lockout keys a lock is permanent after 5 failures; lockout_threshold still sets the threshold', () => {
    const [t1, t2] = parseTenants('t', withContract('lockout_threshold: 7'));
    expect(t1!.contract.lockout).toEqual({ threshold: 7, duration_minutes: null });
    expect(t1!.contract.lockout_threshold).toBe(7);
    expect(t2!.contract.lockout).toEqual({ threshold: 5, duration_minutes: null });
  });

  test('lockout with a duration is temporary; without one, permanent at its threshold', () => {
    expect(parseTenants('t', withContract('lockout: { threshold: 4, duration_minutes: 30 }'))[0]!.contract.lockout).toEqual({ threshold: 4, duration_minutes: 30 });
    const [t1] = parseTenants('t', withContract('lockout: { threshold: 4 }'));
    expect(t1!.contract.lockout).toEqual({ threshold: 4, duration_minutes: null });
    expect(t1!.contract.lockout_threshold).toBe(4);
  });

  test('both keys at once, or values out of range, are refused naming the key', () => {
    expect(() => parseTenants('t', withContract('lockout_threshold: 5, lockout: { threshold: 3 }'))).toThrow(/contract\.lockout_threshold: .*lockout\.threshold/);
    expect(() => parseTenants('t', withContract('lockout: { threshold: 3, duration_minutes: 0 }'))).toThrow(ConfigError);
    expect(() => parseTenants('t', withContract('lockout: { threshold: 3, duration_minutes: 10081 }'))).toThrow(/lockout\.duration_minutes/);
    expect(() => parseTenants('t', withContract('lockout: { threshold: 101 }'))).toThrow(/lockout\.threshold/);
    expect(() => parseTenants('t', withContract('lockout: { duration_minutes: 5 }'))).toThrow(/lockout\.threshold/);
  });
});

describe('temporary lockout', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  let rpT2: oidc.Configuration;

  beforeAll(async () => {
    s = await startTestServer({ tenants: parseTenants('t', TENANTS_YAML) });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    rpT2 = await discover(s.issuer, 'rp-t2', 'rp-t2-secret-01234567890');
  });
  afterAll(async () => {
    await s?.close();
  });

  async function newAccount(tenantId = 't1') {
    const u = uniqueUser('tmp');
    const account = await s.app.services.accounts.create({ tenantId, userId: u.userId, devices: [{ email: u.email }] });
    return { ...u, account };
  }

  /** A login at the code step, with the code mailed for it. */
  async function atCode(u: { userId: string; email: string }, config = rp): Promise<{ login: StartedLogin; otp: string }> {
    const before = s.smtp.messages.length;
    const login = await startLogin(config, s.issuer);
    expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
    return { login, otp: await s.smtp.otpFor(u.email, before) };
  }

  async function signIn(login: StartedLogin, otp: string, config = rp) {
    const res = await submit(login, 'otp', { otp });
    expect(res.status).toBe(303);
    const callback = await followToCallback(login.agent, res);
    return oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
  }

  const account = async (id: string) => (await s.app.services.accounts.findById(id))!;

  /** Moves the account's lock (and when it was taken) `minutes` into the past, as if that time had passed. */
  async function age(id: string, minutes: number) {
    await s.db.prisma.$executeRaw`UPDATE accounts SET locked_at = locked_at - make_interval(mins => ${minutes}), locked_until = locked_until - make_interval(mins => ${minutes}) WHERE id = ${id}::uuid`;
  }

  test('the threshold locks for the contract’s duration: the page and the notice say when it lifts, and the right code is refused meanwhile', async () => {
    const u = await newAccount();
    // A code mailed before the lock: no code is mailed to a locked account.
    const { login: held, otp: right } = await atCode(u);
    const { login } = await atCode(u);
    for (let i = 1; i < THRESHOLD; i++) expect((await submit(login, 'otp', { otp: '11111111' })).status).toBe(401);
    const locked = await submit(login, 'otp', { otp: '11111111' });
    expect(locked.status).toBe(403);
    const page = await locked.text();
    expect(page).toContain(`あと約${DURATION_MINUTES}分でロックが解除されます`);
    expect(page).not.toContain('サポート窓口');

    const a = await account(u.account.id);
    expect(a.failedAttempts).toBe(THRESHOLD);
    expect(a.lockedAt).not.toBeNull();
    expect(a.lockedUntil!.getTime() - a.lockedAt!.getTime()).toBe(DURATION_MINUTES * 60_000);
    expect(toView(a).status).toBe('locked');

    const mail = await s.smtp.waitFor((m) => m.to.includes(u.email) && m.subject.includes('ロック'));
    expect(mail.text).toContain(`${formatEventTime(a.lockedUntil!, 'ja')}に自動的に解除されます`);

    // While locked, even the right code gets the lock page (and still the remaining time).
    await age(u.account.id, 5);
    const refused = await submit(held, 'otp', { otp: right });
    expect(refused.status).toBe(403);
    expect(await refused.text()).toContain(`あと約${DURATION_MINUTES - 5}分でロックが解除されます`);
    expect(refused.headers.get('location')).toBeNull();
    expect((await account(u.account.id)).failedAttempts).toBe(THRESHOLD);
  });

  test('the English lock page says in how many minutes the lock lifts', async () => {
    const u = await newAccount();
    const { login } = await atCode(u);
    login.agent.cookies.set('lang', 'en');
    for (let i = 1; i < THRESHOLD; i++) expect((await submit(login, 'otp', { otp: '11111111' })).status).toBe(401);
    const locked = await submit(login, 'otp', { otp: '11111111' });
    expect(locked.status).toBe(403);
    expect(await locked.text()).toContain(`The lock lifts in about ${DURATION_MINUTES} minutes.`);
    const mail = await s.smtp.waitFor((m) => m.to.includes(u.email) && /locked/i.test(m.subject));
    expect(mail.text).toContain(formatEventTime((await account(u.account.id)).lockedUntil!, 'en'));
  });

  test('once the lock has expired the right code signs in, the counter restarts from 1, and a success resets it', async () => {
    const u = await newAccount();
    const { login } = await atCode(u);
    for (let i = 1; i <= THRESHOLD; i++) await submit(login, 'otp', { otp: '11111111' });
    expect((await account(u.account.id)).lockedAt).not.toBeNull();
    await age(u.account.id, DURATION_MINUTES + 1);

    // Seen from outside, an expired lock is no lock.
    expect(toView(await account(u.account.id)).status).toBe('active');
    const listed = await s.app.services.accounts.list('t1', { status: 'locked', skip: 0, take: 1000 });
    expect(listed.items.map((x) => x.userId)).not.toContain(u.userId);

    // The next wrong code counts from 1 again, in the same statement that counts it.
    const { login: next, otp } = await atCode(u);
    expect((await submit(next, 'otp', { otp: '22222222' })).status).toBe(401);
    const counted = await account(u.account.id);
    expect(counted.failedAttempts).toBe(1);
    expect(counted.lockedAt).toBeNull();
    expect(counted.lockedUntil).toBeNull();

    const tokens = await signIn(next, otp);
    expect(tokens.claims()!.sub).toBe(u.account.id);
    expect((await account(u.account.id)).failedAttempts).toBe(0);
    // Refresh and userinfo work again for the new session.
    const info = await oidc.fetchUserInfo(rp, tokens.access_token, u.account.id);
    expect(info.sub).toBe(u.account.id);
  });

  test('an expired lock lets the right code through at once, without a failure first', async () => {
    const u = await newAccount();
    const { login } = await atCode(u);
    for (let i = 1; i <= THRESHOLD; i++) await submit(login, 'otp', { otp: '11111111' });
    await age(u.account.id, DURATION_MINUTES);
    const { login: next, otp } = await atCode(u);
    await signIn(next, otp);
    const a = await account(u.account.id);
    expect(a.failedAttempts).toBe(0);
    expect(a.lockedAt).toBeNull();
    expect(a.lockedUntil).toBeNull();
  });

  test('parallel wrong codes lock at exactly the threshold, also again after the lock expired', async () => {
    const u = await newAccount();
    for (const round of [1, 2]) {
      const { login: held, otp } = await atCode(u);
      const { login: attack } = await atCode(u);
      const token = csrfOf(await (await attack.agent.get(attack.interactionPath)).text());
      const statuses = await Promise.all(
        Array.from({ length: 30 }, (_, i) => attack.agent.post(`${attack.interactionPath}/otp`, { _csrf: token, otp: String(10000000 + i) }).then((r) => r.status)),
      );
      expect(statuses.every((st) => st === 401 || st === 403)).toBe(true);
      const a = await account(u.account.id);
      expect(a.failedAttempts).toBe(THRESHOLD);
      expect(a.lockedUntil!.getTime() - a.lockedAt!.getTime()).toBe(DURATION_MINUTES * 60_000);
      const wrong = await s.db.prisma.loginEvent.count({ where: { accountId: u.account.id, result: 'wrong_otp' } });
      expect(wrong).toBe(round * (THRESHOLD - 1));
      expect((await submit(held, 'otp', { otp })).status).toBe(403);
      await age(u.account.id, DURATION_MINUTES);
    }
  });

  test('an administrator unlocks a temporary lock before it lifts', async () => {
    const u = await newAccount();
    const { login } = await atCode(u);
    for (let i = 1; i <= THRESHOLD; i++) await submit(login, 'otp', { otp: '11111111' });
    const unlocked = await s.app.services.accountService.unlock('t1', u.userId, { actor: 'admin', ip: null });
    expect(toView(unlocked).status).toBe('active');
    expect(unlocked.lockedUntil).toBeNull();
    const { login: next, otp } = await atCode(u);
    await signIn(next, otp);
  });

  test('recovery refuses a temporarily locked account with the remaining time, and mails its code again once the lock lifted', async () => {
    const u = await newAccount();
    const { login } = await atCode(u);
    for (let i = 1; i <= THRESHOLD; i++) await submit(login, 'otp', { otp: '11111111' });
    const recover = async () => {
      const l = await startLogin(rp, s.issuer);
      const entry = await l.agent.get(`${l.interactionPath}/recovery`);
      await l.agent.get(entry.headers.get('location')!);
      const csrf = l.agent.cookies.get('csrf')!;
      const before = s.smtp.messages.length;
      expect((await l.agent.post(`${l.interactionPath}/recovery/identify`, { _csrf: csrf, userId: u.userId })).status).toBe(303);
      return { l, csrf, before };
    };
    const locked = await recover();
    const refused = await locked.l.agent.post(`${locked.l.interactionPath}/recovery/code`, { _csrf: locked.csrf, otp: '12345678' });
    expect(refused.status).toBe(403);
    expect(await refused.text()).toContain(`あと約${DURATION_MINUTES}分でロックが解除されます`);

    await age(u.account.id, DURATION_MINUTES);
    const lifted = await recover();
    const otp = await s.smtp.otpFor(u.email, lifted.before);
    const coded = await lifted.l.agent.post(`${lifted.l.interactionPath}/recovery/code`, { _csrf: lifted.csrf, otp });
    expect(coded.status).toBe(303);
    expect(coded.headers.get('location')).toMatch(/\/question$/);
  });

  test('activation locks temporarily too, and its page says when the lock lifts', async () => {
    const u = uniqueUser('tmpact');
    const { activation } = await s.app.services.accountService.create('t1', { userId: u.userId, devices: [{ email: u.email }] }, { actor: 'api' });
    const path = new URL(activation.url).pathname + new URL(activation.url).search;
    const agent = new Agent(s.issuer);
    const post = async (otp: string) => {
      const page = await agent.get(path);
      return agent.post(new URL(path, s.issuer).pathname, { _csrf: csrfOf(await page.text()), userId: u.userId, otp });
    };
    for (let i = 1; i < THRESHOLD; i++) expect((await post('00000000')).status).toBe(401);
    const locked = await post('00000000');
    expect(locked.status).toBe(403);
    const lockedPage = await locked.text();
    expect(lockedPage).toContain(`あと約${DURATION_MINUTES}分でロックが解除されます`);
    // The lock lifts by itself: the page keeps the form for then, without "cannot continue".
    expect(lockedPage).not.toContain('初回認証を続けられません');
    expect(lockedPage).toContain('name="otp"');
    const mail = await s.smtp.waitFor((m) => m.to.includes(u.email) && m.subject.includes('ロック'));
    expect(mail.text).toContain('自動的に解除されます');
  });

  test('a contract without a duration keeps the permanent lock with its support-desk message', async () => {
    const u = await newAccount('t2');
    const { login: held, otp } = await atCode(u, rpT2);
    const { login } = await atCode(u, rpT2);
    for (let i = 1; i < 5; i++) expect((await submit(login, 'otp', { otp: '11111111' })).status).toBe(401);
    const locked = await submit(login, 'otp', { otp: '11111111' });
    expect(locked.status).toBe(403);
    const page = await locked.text();
    expect(page).toContain('サポート窓口');
    expect(page).not.toContain('ロックが解除されます');
    const a = await account(u.account.id);
    expect(a.lockedAt).not.toBeNull();
    expect(a.lockedUntil).toBeNull();
    // However long ago: still locked.
    await s.db.prisma.$executeRaw`UPDATE accounts SET locked_at = locked_at - interval '400 days' WHERE id = ${u.account.id}::uuid`;
    expect(toView(await account(u.account.id)).status).toBe('locked');
    const refused = await submit(held, 'otp', { otp });
    expect(refused.status).toBe(403);
    expect(await refused.text()).toContain('サポート窓口');
  });
});
