// PostgreSQL stops answering (a network partition, a stalled server: a TCP proxy that carries no more
// bytes) or refuses connections: every request answers 503 「ただいまサービスを一時的にご利用いただけません」
// with Retry-After within DATABASE_TIMEOUT_SECONDS instead of hanging (or failing as a 500), and the
// same login goes on once the database answers again.
import pg from 'pg';
import { pino } from 'pino';
import * as oidc from 'openid-client';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent, csrfOf, discover, followToCallback, startLogin, type StartedLogin } from '../support/browser-less.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

const UNAVAILABLE = 'ただいまサービスを一時的にご利用いただけません';

describe('the database stops answering, or refuses connections', () => {
  let testDb: TestDatabase;
  let proxy: TcpProxy;
  let s: TestServer;
  let rp: oidc.Configuration;
  const logs: Array<{ level: number; msg: string; path?: string }> = [];

  beforeAll(async () => {
    testDb = await createTestDatabase('outage');
    proxy = await startTcpProxy(Number(new URL(testDb.url).port));
    const viaProxy = new URL(testDb.url);
    viaProxy.port = String(proxy.port);
    const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as { level: number; msg: string }) });
    s = await startTestServer({ databaseUrl: viaProxy.href, logger, env: { DATABASE_TIMEOUT_SECONDS: '1' } });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    proxy?.thaw();
    await s?.close();
    await proxy?.close();
    await testDb?.drop();
  });

  /** Runs `fn` on a connection of its own straight to PostgreSQL (not through the proxy). */
  async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const url = new URL(testDb.url);
    const c = new pg.Client({ host: url.hostname, port: Number(url.port), user: decodeURIComponent(url.username), database: 'postgres' });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  }
  const dbName = () => new URL(testDb.url).pathname.slice(1);

  async function newAccount(prefix: string) {
    const u = uniqueUser(prefix);
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    return u;
  }

  /** The user-ID page of a started login, and its CSRF token (read while the database answered). */
  async function openPage(login: StartedLogin): Promise<string> {
    const page = await login.agent.get(login.interactionPath);
    expect(page.status).toBe(200);
    return csrfOf(await page.text());
  }

  /** The rest of a login from its user-ID step: code mailed, code submitted, code exchanged. */
  async function finish(login: StartedLogin, u: { userId: string; email: string }, csrf: string): Promise<void> {
    const before = s.smtp.messages.length;
    const identified = await login.agent.post(`${login.interactionPath}/identify`, { _csrf: csrf, userId: u.userId });
    expect(identified.status).toBe(303);
    const otp = await s.smtp.otpFor(u.email, before);
    const page = await login.agent.get(login.interactionPath);
    const res = await login.agent.post(`${login.interactionPath}/otp`, { _csrf: csrfOf(await page.text()), otp });
    expect(res.status).toBe(303);
    const callback = await followToCallback(login.agent, res);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    expect(tokens.claims()?.preferred_username).toBe(u.userId);
  }

  /** A login up to the site's callback, its code not yet exchanged. */
  async function codeFor(u: { userId: string; email: string }): Promise<{ login: StartedLogin; callback: URL }> {
    const login = await startLogin(rp, s.issuer);
    const before = s.smtp.messages.length;
    expect((await login.agent.post(`${login.interactionPath}/identify`, { _csrf: await openPage(login), userId: u.userId })).status).toBe(303);
    const otp = await s.smtp.otpFor(u.email, before);
    const page = await login.agent.get(login.interactionPath);
    const res = await login.agent.post(`${login.interactionPath}/otp`, { _csrf: csrfOf(await page.text()), otp });
    return { login, callback: await followToCallback(login.agent, res) };
  }

  async function expectUnavailablePage(res: Promise<Response>): Promise<void> {
    const r = await res;
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('30');
    expect(await r.text()).toContain(UNAVAILABLE);
  }

  /**
   * The code exchange answers 503 with Retry-After and the body of an OAuth error,
   * temporarily_unavailable; openid-client (a real relying party) reports it as an unexpected status
   * with that response.
   */
  async function expectTokenUnavailable(login: StartedLogin, callback: URL): Promise<void> {
    const err = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce }).then(
      () => new Error('the code exchange succeeded without a database'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(oidc.ClientError);
    const response = (err as oidc.ClientError).cause;
    expect(response).toBeInstanceOf(Response);
    expect((response as Response).status).toBe(503);
    expect((response as Response).headers.get('retry-after')).toBe('30');
    expect(await (response as Response).json()).toMatchObject({ error: 'temporarily_unavailable' });
  }

  test('a database that stops answering: 503 pages and token answers within the timeout; the same login goes on afterwards', async () => {
    const u = await newAccount('frozen');
    const login = await startLogin(rp, s.issuer);
    const csrf = await openPage(login);
    const pending = await codeFor(u);
    // Every connection of both pools (the application's and the rate limits', 10 each) open when the freeze comes.
    await Promise.all(Array.from({ length: 30 }, (_, i) => s.app.services.limits.consume('ip', `198.51.100.${i}`)));
    // (Each statement holds its connection a moment, so the 20 at once need all 10.)
    await Promise.all(Array.from({ length: 20 }, () => s.db.sql.query('SELECT pg_sleep(0.05)')));
    expect(s.db.pool!.totalCount).toBe(10);
    logs.length = 0;

    // A request left hanging fails the test by its timeout (DATABASE_TIMEOUT_SECONDS is 1 s here).
    proxy.freeze();
    try {
      await expectUnavailablePage(login.agent.get(login.interactionPath));
      await expectUnavailablePage(login.agent.post(`${login.interactionPath}/identify`, { _csrf: csrf, userId: u.userId }));
      // A new login: oidc-provider's interaction is stored at the end of the authorization request.
      const authorize = oidc.buildAuthorizationUrl(rp, { redirect_uri: 'http://127.0.0.1/cb', scope: 'openid', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' });
      await expectUnavailablePage(new Agent(s.issuer).get(authorize.pathname + authorize.search));
      await expectTokenUnavailable(pending.login, pending.callback);
      // From a browser with a session, oidc-provider reads the session first: the site hears of it (RFC 6749 4.1.2.1).
      const withSession = await pending.login.agent.get(authorize.pathname + authorize.search);
      expect(withSession.status).toBe(303);
      const back = new URL(withSession.headers.get('location')!);
      expect(`${back.origin}${back.pathname}`).toBe('http://127.0.0.1/cb');
      expect(back.searchParams.get('error')).toBe('temporarily_unavailable');
      expect((await fetch(new URL('/health/ready', s.issuer))).status).toBe(503);
      // Rate-limit statements caught by the freeze on every connection of their pool: refused (the
      // mail limit fails closed), and their connections must not stay stuck after it.
      const refusals = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => s.app.services.limits.consume('otp_mail', `t1:frozen-${i}`)));
      expect(refusals.map((r) => r.status)).toEqual(Array(12).fill('rejected'));
      // The same on the application's pool, through the driver and in Prisma transactions.
      const failed = await Promise.allSettled([
        ...Array.from({ length: 12 }, () => s.db.sql.query('SELECT 1')),
        ...Array.from({ length: 3 }, () => s.db.prisma.$transaction(async (tx) => tx.account.count())),
      ]);
      expect(failed.map((r) => r.status)).toEqual(Array(15).fill('rejected'));
    } finally {
      proxy.thaw();
    }

    // The login interrupted goes on from its user-ID step, and a new one runs through.
    await finish(login, u, csrf);
    const fresh = await startLogin(rp, s.issuer);
    await finish(fresh, u, await openPage(fresh));
    // Each failure logged as what it is, the code exchange's too (oidc-provider answers that one itself).
    const errors = logs.filter((l) => l.level >= 50);
    const unavailable = errors.filter((l) => l.msg === 'database unavailable').map((l) => l.path);
    expect(unavailable).toEqual(expect.arrayContaining([login.interactionPath, `${login.interactionPath}/identify`, '/token']));
    // Both authorization requests: the one answered with our page, the one sent back to the site.
    expect(unavailable.filter((p) => p === '/auth')).toHaveLength(2);
    expect(errors.map((l) => l.msg)).not.toContain('unhandled error');
    expect(errors.map((l) => l.msg)).not.toContain('oidc-provider server error');
  });

  test('a database that refuses connections: 503 at once; logins work again when it accepts them', async () => {
    const u = await newAccount('refused');
    const login = await startLogin(rp, s.issuer);
    const csrf = await openPage(login);
    const pending = await codeFor(u);

    await admin(async (c) => {
      await c.query(`ALTER DATABASE "${dbName()}" ALLOW_CONNECTIONS false`);
      await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [dbName()]);
    });
    try {
      await expectUnavailablePage(login.agent.get(login.interactionPath));
      await expectUnavailablePage(login.agent.post(`${login.interactionPath}/identify`, { _csrf: csrf, userId: u.userId }));
      await expectTokenUnavailable(pending.login, pending.callback);
    } finally {
      await admin((c) => c.query(`ALTER DATABASE "${dbName()}" ALLOW_CONNECTIONS true`));
    }

    await finish(login, u, csrf);
    const fresh = await startLogin(rp, s.issuer);
    await finish(fresh, u, await openPage(fresh));
  });
});
