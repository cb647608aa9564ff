// /metrics: Prometheus text format behind a bearer token, and the counters and gauges moving with
// what really happens on a running provider (logins, codes, lockouts, rate limits, mail backlog).
import * as oidc from 'openid-client';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { MailOutboxRepository } from '../../src/persistence/mail-outbox.repository.js';
import { discover, followToCallback, startLogin, submit, type StartedLogin } from '../support/browser-less.js';

const TOKEN = 'metrics-token-0123456789abcdef';

/** The value of one sample (`name{labels}`); labels given must all match. 0 when absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      total += Number(m[3]);
      found = true;
    }
  }
  return found ? total : 0;
}

async function scrape(s: TestServer): Promise<string> {
  const res = await fetch(new URL('/metrics', s.issuer), { headers: { authorization: `Bearer ${TOKEN}` } });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return res.text();
}

/** Polls the metrics until `ok` holds (at most 15 s). */
async function scrapeUntil(s: TestServer, ok: (text: string) => boolean): Promise<string> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const text = await scrape(s);
    if (ok(text)) return text;
    if (Date.now() > deadline) throw new Error(`metrics never matched:\n${text.split('\n').filter((l) => l.startsWith('idp_')).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('/metrics without METRICS_TOKEN', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ database: 'pglite' });
  });
  afterAll(() => s?.close());

  test('does not exist', async () => {
    const res = await fetch(new URL('/metrics', s.issuer), { headers: { authorization: `Bearer ${TOKEN}`, accept: 'application/json' } });
    expect(res.status).toBe(404);
    expect(await res.text()).not.toContain('idp_');
  });
});

describe('/metrics', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  beforeAll(async () => {
    s = await startTestServer({ env: { METRICS_TOKEN: TOKEN } });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(() => s?.close());

  async function newAccount() {
    const u = uniqueUser('met');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    return u;
  }

  async function identified(userId: string): Promise<StartedLogin> {
    const login = await startLogin(rp, s.issuer);
    expect((await submit(login, 'identify', { userId })).status).toBe(303);
    return login;
  }

  test('refuses a missing or wrong token, serves the right one', async () => {
    const url = new URL('/metrics', s.issuer);
    const none = await fetch(url);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('Bearer');
    expect(await none.text()).not.toContain('idp_');
    const wrong = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}x` } });
    expect(wrong.status).toBe(401);
    const text = await scrape(s);
    expect(text).toContain('# TYPE idp_logins_total counter');
    expect(text).toContain('# TYPE idp_http_request_duration_seconds histogram');
    // Default process metrics, and the PostgreSQL pool.
    expect(text).toContain('process_cpu_seconds_total');
    expect(text).toContain('nodejs_eventloop_lag_seconds');
    expect(text).toMatch(/^idp_db_pool_connections\{state="total"\} [1-9]/m);
    // Background work (the webhook and mail queues' polls) may hold the pool at that moment: a count, not 0.
    expect(text).toMatch(/^idp_db_pool_connections\{state="waiting"\} \d+$/m);
  });

  test('an OTP login moves the login, code and request figures', async () => {
    const before = await scrape(s);
    const u = await newAccount();
    const since = s.smtp.messages.length;
    const login = await identified(u.userId);
    const otp = await s.smtp.otpFor(u.email, since);
    const res = await submit(login, 'otp', { otp });
    expect(res.status).toBe(303);
    const callback = await followToCallback(login.agent, res);
    await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });

    const after = await scrape(s);
    const success = { result: 'success', method: 'otp' };
    expect(sample(after, 'idp_logins_total', success) - sample(before, 'idp_logins_total', success)).toBe(1);
    const codes = { template: 'login-otp' };
    expect(sample(after, 'idp_otp_codes_sent_total', codes) - sample(before, 'idp_otp_codes_sent_total', codes)).toBe(1);
    // Requests are labelled by route template, never by the interaction's id.
    const count = 'idp_http_request_duration_seconds_count';
    expect(sample(after, count, { method: 'POST', route: '/interaction/:uid/identify', status: '303' })).toBeGreaterThanOrEqual(1);
    expect(sample(after, count, { method: 'POST', route: '/interaction/:uid/otp', status: '303' })).toBeGreaterThanOrEqual(1);
    expect(sample(after, count, { method: 'POST', route: 'token', status: '200' })).toBeGreaterThanOrEqual(1);
    expect(sample(after, count, { method: 'GET', route: 'authorization' })).toBeGreaterThanOrEqual(1);
    expect(after).not.toContain(login.uid);
  });

  test('wrong codes count as wrong_otp, and the lock as a lockout', async () => {
    const before = await scrape(s);
    const u = await newAccount();
    const since = s.smtp.messages.length;
    const login = await identified(u.userId);
    const otp = await s.smtp.otpFor(u.email, since);
    const wrong = otp === '00000000' ? '11111111' : '00000000';
    const r1 = await submit(login, 'otp', { otp: wrong });
    expect(r1.status).toBeGreaterThanOrEqual(400);
    let after = await scrape(s);
    const wrongOtp = { result: 'wrong_otp', method: 'otp' };
    expect(sample(after, 'idp_logins_total', wrongOtp) - sample(before, 'idp_logins_total', wrongOtp)).toBe(1);
    expect(sample(after, 'idp_lockouts_total')).toBe(sample(before, 'idp_lockouts_total'));
    // t1 locks at 5 consecutive failures.
    for (let i = 0; i < 4; i++) await submit(login, 'otp', { otp: wrong });
    after = await scrape(s);
    expect(sample(after, 'idp_lockouts_total') - sample(before, 'idp_lockouts_total')).toBe(1);
    expect(sample(after, 'idp_logins_total', wrongOtp) - sample(before, 'idp_logins_total', wrongOtp)).toBe(4);
    const locked = { result: 'locked', method: 'otp' };
    expect(sample(after, 'idp_logins_total', locked) - sample(before, 'idp_logins_total', locked)).toBe(1);
  });

  test('the mail gauges show a code mail waiting while SMTP is down', async () => {
    // The notices of the tests before (e.g. the lock's) are delivered first.
    await scrapeUntil(s, (t) => sample(t, 'idp_mail_queue_depth') === 0 && sample(t, 'idp_mail_oldest_undelivered_seconds') === 0);
    const u = await newAccount();
    await s.smtp.stop();
    try {
      await identified(u.userId);
      const waiting = await scrapeUntil(s, (t) => sample(t, 'idp_mail_queue_depth') === 1);
      expect(sample(waiting, 'idp_mail_oldest_undelivered_seconds')).toBeGreaterThan(0);
    } finally {
      await s.smtp.start();
    }
    await s.smtp.otpFor(u.email);
    await scrapeUntil(s, (t) => sample(t, 'idp_mail_queue_depth') === 0 && sample(t, 'idp_mail_oldest_undelivered_seconds') === 0);
  });
});

describe('/metrics: mail given up', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ database: 'pglite', env: { METRICS_TOKEN: TOKEN } });
  });
  afterAll(() => s?.close());

  test('a mail recorded as given up is counted', async () => {
    expect(sample(await scrape(s), 'idp_mail_delivery_failures_total')).toBe(0);
    // As the delivery records a message it gives up (a permanent SMTP refusal, or BullMQ's last attempt).
    const outbox = new MailOutboxRepository(s.db.prisma, s.db.sql);
    await outbox.recordFailed({ template: 'account-locked', tenantId: 't1', otpId: null, recipients: 1, maskedTo: ['u***@example.test'], deliverBy: new Date(), attempts: 3, lastError: '550 no such user', createdAt: new Date() });
    const text = await scrape(s);
    expect(sample(text, 'idp_mail_delivery_failures_total')).toBe(1);
    expect(sample(text, 'idp_mail_queue_depth')).toBe(0);
  });
});

describe('/metrics: rate-limit refusals', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  beforeAll(async () => {
    // PostgreSQL: the counters of one step are taken in one statement there.
    s = await startTestServer({ env: { METRICS_TOKEN: TOKEN, RATE_LIMIT_IP_PER_MINUTE: '2' } });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(() => s?.close());

  test('a refused step is counted under its limit', async () => {
    const before = await scrape(s);
    expect(sample(before, 'idp_rate_limit_refusals_total', { kind: 'ip' })).toBe(0);
    const login = await startLogin(rp, s.issuer);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await submit(login, 'identify', { userId: uniqueUser('rl').userId })).status);
    expect(statuses).toContain(429);
    const after = await scrape(s);
    expect(sample(after, 'idp_rate_limit_refusals_total', { kind: 'ip' })).toBe(statuses.filter((x) => x === 429).length);
  });
});

describe('/metrics with Redis: the mail backlog is the BullMQ queue', () => {
  const prefix = `metrics-test-${process.pid}-${Date.now().toString(36)}`;
  let s: TestServer;
  let rp: oidc.Configuration;
  beforeAll(async () => {
    s = await startTestServer({ database: 'pglite', env: { METRICS_TOKEN: TOKEN, REDIS_URL: 'redis://127.0.0.1:6379' }, mailQueue: { prefix } });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    await s?.close();
    const { Redis } = await import('ioredis');
    const redis = new Redis('redis://127.0.0.1:6379');
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    await redis.quit();
  });

  test('a code mail waiting while SMTP is down is counted, and gone once delivered', async () => {
    await scrapeUntil(s, (t) => sample(t, 'idp_mail_queue_depth') === 0);
    const u = uniqueUser('metr');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    await s.smtp.stop();
    try {
      const login = await startLogin(rp, s.issuer);
      expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
      // Waiting for its retry (delayed) or its next attempt (waiting): either way not delivered.
      const waiting = await scrapeUntil(s, (t) => sample(t, 'idp_mail_queue_depth') === 1);
      expect(sample(waiting, 'idp_mail_oldest_undelivered_seconds')).toBeGreaterThan(0);
    } finally {
      await s.smtp.start();
    }
    await s.smtp.otpFor(u.email);
    await scrapeUntil(s, (t) => sample(t, 'idp_mail_queue_depth') === 0 && sample(t, 'idp_mail_oldest_undelivered_seconds') === 0);
  });
});
