import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { discover, startLogin, submit } from '../support/browser-less.js';
import { mailedBeforeMarker } from '../support/mail-marker.js';

describe('abuse limits and code resending', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ env: { RATE_LIMIT_OTP_MAILS_PER_HOUR: '3', OTP_RESEND_COOLDOWN: '60' } });
  });
  afterAll(async () => {
    await s?.close();
  });

  const rp = () => discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');

  test('an account gets at most N code mails an hour, and an unknown ID is limited the same way', async () => {
    const known = uniqueUser('bomb');
    await s.app.services.accounts.create({ tenantId: 't1', userId: known.userId, devices: [{ email: known.email }] });
    const unknown = uniqueUser('nobody');
    const config = await rp();
    const before = s.smtp.messages.length;
    for (const userId of [known.userId, unknown.userId]) {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) {
        const login = await startLogin(config, s.issuer);
        statuses.push((await submit(login, 'identify', { userId })).status);
      }
      expect(statuses).toEqual([303, 303, 303, 429, 429]);
    }
    expect((await mailedBeforeMarker(s, known.email, before)).filter((m) => m.to.includes(known.email))).toHaveLength(3);
  });

  test('the 429 page says to wait, in the user language, with Retry-After', async () => {
    const u = uniqueUser('wait');
    const config = await rp();
    let res: Response | undefined;
    for (let i = 0; i < 4; i++) {
      const login = await startLogin(config, s.issuer);
      res = await submit(login, 'identify', { userId: u.userId });
    }
    expect(res!.status).toBe(429);
    expect(Number(res!.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await res!.text()).toContain('しばらく');
  });

  test('resend waits for its cool-down', async () => {
    const u = uniqueUser('resend');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    const login = await startLogin(await rp(), s.issuer);
    await submit(login, 'identify', { userId: u.userId });
    const res = await submit(login, 'resend', {});
    expect(res.status).toBe(400);
    expect(await res.text()).toMatch(/再送信は\d+秒後からできます/);
  });
});

describe('per-IP limit', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ env: { RATE_LIMIT_IP_PER_MINUTE: '5', TRUST_PROXY: 'true' } });
  });
  afterAll(async () => {
    await s?.close();
  });

  test('too many steps from one IP give 429; another IP is unaffected', async () => {
    const config = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const login = await startLogin(config, s.issuer);
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) {
      const page = await login.agent.get(login.interactionPath);
      const token = /name="_csrf" value="([^"]+)"/.exec(await page.text())![1]!;
      const r = await login.agent.post(`${login.interactionPath}/otp`, { _csrf: token, otp: '12345678' }, { 'x-forwarded-for': '203.0.113.9' });
      statuses.push(r.status);
    }
    expect(statuses.filter((x) => x === 429)).toHaveLength(2);
    const other = await login.agent.post(`${login.interactionPath}/identify`, { _csrf: login.agent.cookies.get('csrf')!, userId: 'x' }, { 'x-forwarded-for': '203.0.113.10' });
    expect(other.status).not.toBe(429);
  });

});

describe('resending and new-IP notices', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ env: { TRUST_PROXY: 'true' } });
  });
  afterAll(async () => {
    await s?.close();
  });

  test('a resent code replaces the old one; a login from a new IP is mailed to the user', async () => {
    const u = uniqueUser('newip');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    const config = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const login = async (ip: string) => {
      const l = await startLogin(config, s.issuer);
      const before = s.smtp.messages.length;
      await submit(l, 'identify', { userId: u.userId });
      const first = await s.smtp.otpFor(u.email, before);
      const mid = s.smtp.messages.length;
      const resent = await submit(l, 'resend', {});
      expect(resent.status).toBe(303);
      const second = await s.smtp.otpFor(u.email, mid);
      expect(second).not.toBe(first);
      const page = await l.agent.get(l.interactionPath);
      const token = /name="_csrf" value="([^"]+)"/.exec(await page.text())![1]!;
      const old = await l.agent.post(`${l.interactionPath}/otp`, { _csrf: token, otp: first }, { 'x-forwarded-for': ip });
      expect(old.status).toBe(401);
      const ok = await l.agent.post(`${l.interactionPath}/otp`, { _csrf: token, otp: second }, { 'x-forwarded-for': ip });
      expect(ok.status).toBe(303);
    };
    await login('198.51.100.1');
    await login('198.51.100.1');
    expect(s.smtp.messages.filter((m) => m.to.includes(u.email) && m.text.includes('198.51.100.1'))).toHaveLength(0);
    await login('198.51.100.2');
    const notice = await s.smtp.waitFor((m) => m.to.includes(u.email) && m.text.includes('198.51.100.2'));
    expect(notice.subject).toBeTruthy();
    const events = await s.db.prisma.loginEvent.findMany({ where: { submittedUserId: u.userId, result: 'success' } });
    expect(events.map((e) => e.sourceIp).sort()).toEqual(['198.51.100.1', '198.51.100.1', '198.51.100.2']);
  });
});
