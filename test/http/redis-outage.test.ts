// Redis goes away under a running provider (a private redis-server, never the shared one) and comes back.
import type { ChildProcess } from 'node:child_process';
import * as oidc from 'openid-client';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { discover, followToCallback, startLogin, submit } from '../support/browser-less.js';
import { startRedis, stopRedis } from '../support/redis-server.js';
import { freePort } from '../support/relying-party.js';




describe('Redis outage', () => {
  let redis: ChildProcess | undefined;
  let s: TestServer | undefined;
  let port: number;
  let rp: oidc.Configuration;
  let apiToken: string;

  beforeAll(async () => {
    port = await freePort();
    redis = await startRedis(port);
    s = await startTestServer({ env: { REDIS_URL: `redis://127.0.0.1:${port}` } });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const backOffice = await discover(s.issuer, 'backoffice-t1', 'backoffice-t1-secret-0123456789');
    apiToken = (await oidc.clientCredentialsGrant(backOffice, { scope: 'management' })).access_token;
  });
  afterAll(async () => {
    // Closing the app waits for its queue, so bring Redis back first if a failed test left it down.
    if (redis && redis.exitCode !== null) redis = await startRedis(port);
    await s?.close();
    if (redis) await stopRedis(redis);
  });

  async function newAccount() {
    const u = uniqueUser('redis');
    await s!.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    return u;
  }

  async function login(u: { userId: string; email: string }) {
    const before = s!.smtp.messages.length;
    const started = await startLogin(rp, s!.issuer);
    const identified = await submit(started, 'identify', { userId: u.userId });
    if (identified.status !== 303) return { status: identified.status };
    // The code mail is queued after the answer; when Redis refused it, the code page says it could
    // not be sent. Either marker ends the wait.
    const deadline = Date.now() + 10_000;
    let otp: string | undefined;
    while (!otp) {
      const mail = s!.smtp.messages.slice(before).find((m) => m.to.includes(u.email) && /\b\d{8}\b/.test(m.text));
      if (mail) otp = /\b(\d{8})\b/.exec(mail.text)![1]!;
      else if ((await (await started.agent.get(started.interactionPath)).text()).includes('ワンタイムパスワードが送信できませんでした')) return { status: 'not_sent' as const };
      else if (Date.now() > deadline) throw new Error('neither the code mail nor the not-sent page');
      else await new Promise((r) => setTimeout(r, 50));
    }
    const res = await submit(started, 'otp', { otp });
    expect(res.status).toBe(303);
    const callback = await followToCallback(started.agent, res);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: started.verifier, expectedState: started.state, expectedNonce: started.nonce });
    expect(tokens.claims()?.preferred_username).toBe(u.userId);
    return { status: identified.status };
  }

  test('pages say the service is unavailable (503) while Redis is down, and logins resume when it is back', async () => {
    const u = await newAccount();
    expect((await login(u)).status).toBe(303);

    await stopRedis(redis!);
    const started = await startLogin(rp, s!.issuer);
    const down = await submit(started, 'identify', { userId: u.userId });
    expect(down.status).toBe(503);
    expect(Number(down.headers.get('retry-after'))).toBeGreaterThan(0);
    const html = await down.text();
    expect(html).toContain('ただいまサービスを一時的にご利用いただけません');
    expect(html).not.toContain('短時間に多くの操作が行われました');

    // The management API says the same as problem+json (the reissue notice cannot be queued).
    const other = await newAccount();
    const api = await fetch(new URL(`/api/v1/accounts/${encodeURIComponent(other.userId)}/activation`, s!.issuer), {
      method: 'POST',
      headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json', 'accept-language': 'en' },
      body: '{}',
    });
    expect(api.status).toBe(503);
    expect(api.headers.get('content-type')).toContain('application/problem+json');
    expect(Number(api.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await api.json()).toMatchObject({ status: 503, title: 'Service temporarily unavailable', detail: 'The service is temporarily unavailable. Please try again in a little while.' });

    // A creation whose activation mail cannot be queued leaves nothing half-made: the site retries later.
    const fresh = uniqueUser('redis');
    const create = () =>
      fetch(new URL('/api/v1/accounts', s!.issuer), {
        method: 'POST',
        headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ userId: fresh.userId, devices: [{ email: fresh.email }], sendActivation: true }),
      });
    expect((await create()).status).toBe(503);
    expect(await s!.db.prisma.account.count({ where: { userId: fresh.userId } })).toBe(0);

    redis = await startRedis(port);
    let created = await create();
    for (const until = Date.now() + 15_000; created.status === 503 && Date.now() < until; ) created = await create();
    expect(created.status).toBe(201);
    // The app reconnects by itself; the first logins may still meet the old connection's backoff
    // (a 503 at the user-ID step, or a code that could not be queued: the user starts again).
    const deadline = Date.now() + 15_000;
    let res = await login(u);
    while ((res.status === 503 || res.status === 'not_sent') && Date.now() < deadline) res = await login(u);
    expect(res.status).toBe(303);
  }, 60_000);

  test('a Redis that stops answering (the process stopped, its connections open): 503 within a few seconds instead of requests that hang; all well once it answers again', async () => {
    const u = await newAccount();
    expect((await login(u)).status).toBe(303);
    // A request left hanging fails the test by its timeout (every wait for Redis is 1–5 s).
    redis!.kill('SIGSTOP');
    try {
      const started = await startLogin(rp, s!.issuer);
      const down = await submit(started, 'identify', { userId: u.userId });
      expect(down.status).toBe(503);
      expect(await down.text()).toContain('ただいまサービスを一時的にご利用いただけません');
      // A notice the request itself queues (the activation reissue's): refused, not waited for.
      const other = await newAccount();
      const api = await fetch(new URL(`/api/v1/accounts/${encodeURIComponent(other.userId)}/activation`, s!.issuer), {
        method: 'POST',
        headers: { authorization: `Bearer ${apiToken}`, 'content-type': 'application/json' },
        body: '{}',
      });
      expect(api.status).toBe(503);
      expect(Number(api.headers.get('retry-after'))).toBeGreaterThan(0);
      expect((await fetch(new URL('/health/ready', s!.issuer))).status).toBe(503);
    } finally {
      redis!.kill('SIGCONT');
    }

    const deadline = Date.now() + 15_000;
    let res = await login(u);
    while ((res.status === 503 || res.status === 'not_sent') && Date.now() < deadline) res = await login(u);
    expect(res.status).toBe(303);
  }, 60_000);

  test('a provider stopped while Redis is down still shuts down (its mail worker does not wait for Redis forever)', async () => {
    const other = await startTestServer({ env: { REDIS_URL: `redis://127.0.0.1:${port}`, MAIL_WORKER: 'inline' } });
    await stopRedis(redis!);
    try {
      // Resolves (the test's own timeout is the bound): jobs in hand get a grace period, then the worker lets go.
      await other.close();
    } finally {
      redis = await startRedis(port);
    }
  }, 60_000);
});
