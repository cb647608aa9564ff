// Two stateless provider instances on one PostgreSQL database and one Redis, behind HAProxy running
// deploy/haproxy.cfg (TLS at the load balancer, round robin, no stickiness), with the mail worker as a
// process of its own, as deploy/compose.yaml runs them. Loopback only; every process is ours.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import * as oidc from 'openid-client';
import { openDatabase, MEMORY_DATA_DIR, type Database } from '../../src/persistence/database.js';
import { AccountRepository } from '../../src/persistence/account.repository.js';
import { Agent, csrfOf, followToCallback, startLogin, submit, type StartedLogin } from '../support/browser-less.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { freePort } from '../support/relying-party.js';
import { startSmtpServer } from '../support/smtp.js';
import { eventually, productionSecrets, startProviderProcess, type ProviderProcess } from '../production/provider-process.js';
import { startRedis } from '../support/redis-server.js';

const run = promisify(execFile);
const CLIENT_ID = 'lb-site';
const CLIENT_SECRET = 'lb-site-secret-0123456789abcdef';
const LOCKOUT_THRESHOLD = 3;
const IP_PER_MINUTE = 6;
const TENANTS = `tenants:
  - id: t1
    name: テナント1
    contract: { login_methods: [otp], lockout_threshold: ${LOCKOUT_THRESHOLD} }
    clients:
      - { client_id: ${CLIENT_ID}, client_secret: ${CLIENT_SECRET}, name: 利用サイト, redirect_uris: ['http://127.0.0.1/cb'] }
`;


async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

interface Served {
  method: string;
  path: string;
  status: number;
  /** HAProxy's X-Served-By: the instance that answered. */
  by: string | null;
  setCookies: string[];
}

/**
 * A fetch over node:https trusting `ca`, connecting from `localAddress` (a loopback address of its
 * own per simulated user, so each has its own source IP), recording which instance answered.
 */
function lbFetch(ca: string, localAddress: string, log: Served[]): typeof fetch {
  return (async (input: string | URL | Request, init: RequestInit = {}) => {
    const url = new URL(input instanceof Request ? input.url : input.toString());
    const headers = new Headers(init.headers);
    const body = init.body == null ? undefined : typeof init.body === 'string' ? init.body : init.body instanceof URLSearchParams ? init.body.toString() : String(init.body);
    if (body !== undefined) headers.set('content-length', String(Buffer.byteLength(body)));
    const method = init.method ?? 'GET';
    const requestFn = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<Response>((resolve, reject) => {
      const req = requestFn(url, { method, headers: Object.fromEntries(headers), ca, localAddress, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const out = new Headers();
          for (const [name, value] of Object.entries(res.headers)) {
            if (Array.isArray(value)) for (const v of value) out.append(name, v);
            else if (value !== undefined) out.set(name, value);
          }
          const status = res.statusCode ?? 500;
          log.push({ method, path: url.pathname, status, by: out.get('x-served-by'), setCookies: out.getSetCookie() });
          const buf = Buffer.concat(chunks);
          resolve(new Response(status === 204 || status === 304 || buf.length === 0 ? null : buf, { status, headers: out }));
        });
      });
      req.on('error', reject);
      if (body !== undefined) req.write(body);
      req.end();
    });
  }) as typeof fetch;
}

/** HAProxy's statistics of one backend server (from its admin socket): retries and redispatches. */
async function serverStats(socket: string, server: string): Promise<{ status: string; retries: number; redispatches: number }> {
  const csv = await new Promise<string>((resolve, reject) => {
    const c = connect(socket);
    let data = '';
    c.on('data', (d: Buffer) => (data += d.toString('utf8')));
    c.on('end', () => resolve(data));
    c.on('error', reject);
    c.write('show stat\n');
  });
  const [header = '', ...rows] = csv.replace(/^# /, '').trim().split('\n');
  const cols = header.split(',');
  const row = rows.map((r) => r.split(',')).find((r) => r[0] === 'providers' && r[1] === server);
  if (!row) throw new Error(`no stats for ${server}:\n${csv}`);
  const col = (name: string) => row[cols.indexOf(name)] ?? '';
  return { status: col('status'), retries: Number(col('wretr')), redispatches: Number(col('wredis')) };
}

const INSTANCES = ['provider1', 'provider2'] as const;

describe('two instances behind HAProxy (deploy/haproxy.cfg)', () => {
  let dir: string;
  let database: TestDatabase;
  let db: Database;
  let redis: ChildProcess;
  let redisPort: number;
  let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
  let providers: ProviderProcess[] = [];
  let worker: ProviderProcess | undefined;
  let haproxy: ChildProcess | undefined;
  let haproxyOut = '';
  let statsSocket: string;
  let issuer: string;
  let ca: string;
  let nextIp = 10;
  let accounts = 0;

  /** A user of the site with an address of its own (127.0.0.N) and a record of who served them. */
  async function user(): Promise<{ ip: string; served: Served[]; agent: Agent; rp: oidc.Configuration }> {
    const ip = `127.0.0.${nextIp++}`;
    const served: Served[] = [];
    const f = lbFetch(ca, ip, served);
    // openid-client's requests (discovery, token) take the same way.
    const viaLb: oidc.CustomFetch = (url, options) => {
      const b = options.body;
      if (b != null && typeof b !== 'string' && !(b instanceof URLSearchParams) && !(b instanceof Uint8Array)) throw new Error('unexpected body');
      return f(url, { method: options.method, headers: options.headers, body: b == null ? undefined : b instanceof Uint8Array ? Buffer.from(b).toString('utf8') : b.toString(), signal: options.signal });
    };
    const rp = await oidc.discovery(new URL(issuer), CLIENT_ID, undefined, oidc.ClientSecretBasic(CLIENT_SECRET), { [oidc.customFetch]: viaLb });
    rp[oidc.customFetch] = viaLb;
    return { ip, served, agent: new Agent(issuer, f), rp };
  }

  async function newAccount(name: string) {
    const n = ++accounts;
    const u = { userId: `${name}-${n}`, email: `${name}-${n}@example.com` };
    await new AccountRepository(db.prisma).create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    return u;
  }

  /**
   * Requests GET /health through the load balancer until the next request goes to `instance`: with
   * two instances, round robin sends each request to the other one than the last (nothing else
   * talks to this HAProxy; its health checks do not take turns).
   */
  async function steerTo(agent: Agent, served: Served[], instance: string): Promise<void> {
    for (let i = 0; i < 4; i++) {
      const last = served.at(-1)?.by;
      if (last && last !== instance) return;
      expect((await agent.get('/health')).status).toBe(200);
    }
    throw new Error(`round robin never pointed to ${instance}: ${JSON.stringify(served.slice(-4))}`);
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'idp-lb-'));
    // The load balancer's certificate (TLS ends there, as in production).
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')]);
    ca = readFileSync(join(dir, 'cert.pem'), 'utf8');
    writeFileSync(join(dir, 'lb.pem'), ca + readFileSync(join(dir, 'key.pem'), 'utf8'));
    writeFileSync(join(dir, 'tenants.yaml'), TENANTS);

    [database, smtp, redisPort] = await Promise.all([createTestDatabase('lb'), startSmtpServer(), freePort()]);
    redis = await startRedis(redisPort);
    const lbPort = await freePort();
    issuer = `https://127.0.0.1:${lbPort}`;
    // One set of secrets, one database, one Redis and one tenants file for every process.
    const shared = {
      ...productionSecrets(),
      HOST: '127.0.0.1',
      ISSUER: issuer,
      TRUST_PROXY: 'true',
      DATABASE_URL: database.url,
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      MAIL_WORKER: 'external',
      SMTP_URL: smtp.url,
      TENANTS_FILE: join(dir, 'tenants.yaml'),
      RATE_LIMIT_IP_PER_MINUTE: String(IP_PER_MINUTE),
      WEB_CONCURRENCY: '1',
    };
    const ports = [await freePort(), await freePort()];
    const start = (i: number) => startProviderProcess(['--import', 'tsx', 'src/main.ts'], { ...shared, PORT: String(ports[i]), DATA_DIR: join(dir, `data${i}`) }, process.cwd());
    // All at once on the empty database, as an orchestrator starts them: one applies the migrations
    // while the other waits for it.
    providers = [start(0), start(1)];
    worker = startProviderProcess(['--import', 'tsx', 'src/worker.ts'], { ...shared, DATA_DIR: join(dir, 'worker') }, process.cwd());
    await Promise.all([...providers.map((p) => p.waitForRecord((r) => r.msg === 'provider listening', 60_000)), worker.waitForRecord((r) => r.msg === 'mail worker started', 60_000)]);

    // The deployment's configuration as it is, plus an admin socket for the test to read counters.
    statsSocket = join(dir, 'haproxy.sock');
    writeFileSync(join(dir, 'test-stats.cfg'), `global\n    stats socket ${statsSocket} mode 600 level admin\n`);
    haproxy = spawn('haproxy', ['-db', '-f', 'deploy/haproxy.cfg', '-f', join(dir, 'test-stats.cfg')], {
      env: { PATH: process.env.PATH ?? '', LB_BIND: `127.0.0.1:${lbPort}`, LB_CERT: join(dir, 'lb.pem'), PROVIDER_1: `127.0.0.1:${ports[0]}`, PROVIDER_2: `127.0.0.1:${ports[1]}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const s of [haproxy.stdout!, haproxy.stderr!]) s.on('data', (d: Buffer) => (haproxyOut += d.toString('utf8')));
    await eventually(
      'HAProxy answering with both instances up',
      async () => {
        if (haproxy!.exitCode !== null) throw new Error(`haproxy exited:\n${haproxyOut}`);
        try {
          const up = await Promise.all(INSTANCES.map((s) => serverStats(statsSocket, s)));
          return up.every((s) => s.status === 'UP') ? true : undefined;
        } catch {
          return undefined;
        }
      },
      15_000,
    );
    db = await openDatabase({ databaseUrl: database.url, dataDir: MEMORY_DATA_DIR });
  }, 120_000);

  afterAll(async () => {
    await stop(haproxy);
    await Promise.all([...providers, ...(worker ? [worker] : [])].map((p) => p.kill()));
    await db?.close();
    await stop(redis);
    await smtp?.close();
    await database?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Identify step of a new login; returns the login and the mailed code. */
  async function identify(u: Awaited<ReturnType<typeof user>>, account: { userId: string; email: string }) {
    const login = await startLogin(u.rp, issuer, {}, u.agent);
    const before = smtp.messages.length;
    expect((await submit(login, 'identify', { userId: account.userId })).status).toBe(303);
    return { login, otp: await smtp.otpFor(account.email, before) };
  }

  async function finish(u: Awaited<ReturnType<typeof user>>, login: StartedLogin, otp: string, userId: string) {
    const res = await submit(login, 'otp', { otp });
    expect(res.status).toBe(303);
    const callback = await followToCallback(u.agent, res);
    const tokens = await oidc.authorizationCodeGrant(u.rp, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    expect(tokens.claims()?.preferred_username).toBe(userId);
  }

  test('started together on an empty database, one process (instance or mail worker) applied the migrations', () => {
    const migrated = [...providers, worker!].map((p) => p.records().filter((r) => r.msg === 'migration applied').length);
    expect(migrated.filter((n) => n > 0)).toHaveLength(1);
    expect(Math.max(...migrated)).toBeGreaterThan(0);
  });

  test('complete logins through the load balancer: the steps of each land on both instances; https and the client IP come from the proxy headers', async () => {
    for (let i = 0; i < 3; i++) {
      const u = await user();
      expect(u.rp.serverMetadata().issuer).toBe(issuer);
      const account = await newAccount('lb');
      const { login, otp } = await identify(u, account);
      await finish(u, login, otp, account.userId);
      // Every request of this login went through HAProxy to one of the two instances, and both served some.
      expect(u.served.every((s) => s.by === 'provider1' || s.by === 'provider2')).toBe(true);
      expect(new Set(u.served.map((s) => s.by))).toEqual(new Set(INSTANCES));
      // The steps of the form itself (GET and POST of the interaction) were split between them too.
      expect(new Set(u.served.filter((s) => s.path.startsWith('/interaction/')).map((s) => s.by))).toEqual(new Set(INSTANCES));
      // X-Forwarded-For from HAProxy: the login history holds the user's own address.
      const events = await db.prisma.loginEvent.findMany({ where: { submittedUserId: account.userId } });
      expect(events.map((e) => [e.result, e.sourceIp])).toEqual([['success', u.ip]]);
      // X-Forwarded-Proto from HAProxy: the instances, reached over plain HTTP, set Secure cookies.
      const cookies = u.served.flatMap((s) => s.setCookies);
      expect(cookies.length).toBeGreaterThan(0);
      for (const c of cookies) expect(c).toMatch(/;\s*secure/i);
    }
  }, 40_000);

  test('wrong codes sent alternately to both instances lock the account at exactly the threshold', async () => {
    const u = await user();
    const account = await newAccount('lock');
    const { login, otp } = await identify(u, account);
    const token = csrfOf(await (await u.agent.get(login.interactionPath)).text());
    const statuses: number[] = [];
    const by: Array<string | null> = [];
    for (let i = 0; i < LOCKOUT_THRESHOLD; i++) {
      await steerTo(u.agent, u.served, INSTANCES[i % 2]!);
      const res = await u.agent.post(`${login.interactionPath}/otp`, { _csrf: token, otp: otp === '11111111' ? '22222222' : '11111111' });
      statuses.push(res.status);
      by.push(res.headers.get('x-served-by'));
      if (i === LOCKOUT_THRESHOLD - 1) expect(await res.text()).toContain('アカウントをロックしました');
    }
    expect(by).toEqual(['provider1', 'provider2', 'provider1']);
    expect(statuses).toEqual([401, 401, 403]);
    const stored = await db.prisma.account.findFirst({ where: { userId: account.userId } });
    expect(stored?.failedAttempts).toBe(LOCKOUT_THRESHOLD);
    expect(stored?.lockedAt).not.toBeNull();
    // Locked on both: the right code is refused whichever instance gets it.
    for (const instance of INSTANCES) {
      await steerTo(u.agent, u.served, instance);
      const res = await u.agent.post(`${login.interactionPath}/otp`, { _csrf: token, otp });
      expect([res.status, res.headers.get('x-served-by')]).toEqual([403, instance]);
    }
  }, 30_000);

  test('the per-IP limit is one count in Redis for all instances; a forged X-Forwarded-For does not escape it', async () => {
    const u = await user();
    const results: Array<[number, string | null]> = [];
    for (let i = 0; i <= IP_PER_MINUTE; i++) {
      const login = await startLogin(u.rp, issuer, {}, u.agent);
      const page = await u.agent.get(login.interactionPath);
      const res = await u.agent.post(`${login.interactionPath}/identify`, { _csrf: csrfOf(await page.text()), userId: `nobody-${i}` }, { 'x-forwarded-for': `203.0.113.${i + 1}` });
      results.push([res.status, res.headers.get('x-served-by')]);
    }
    expect(results.map(([status]) => status)).toEqual([...Array<number>(IP_PER_MINUTE).fill(303), 429]);
    // Both instances counted: alone, neither saw more than the limit.
    expect(new Set(results.map(([, by]) => by))).toEqual(new Set(INSTANCES));
    const client = new Redis(redisPort, '127.0.0.1', { lazyConnect: true });
    try {
      await client.connect();
      expect((await client.keys(`*${u.ip}*`)).length).toBeGreaterThan(0);
      expect(await client.keys('*203.0.113.*')).toEqual([]);
    } finally {
      client.disconnect();
    }
  }, 30_000);

  test('an instance killed (SIGKILL) between the user-ID step and the code: every login still completes', async () => {
    const users = await Promise.all(Array.from({ length: 4 }, () => user()));
    const started = [];
    for (const u of users) {
      const account = await newAccount('kill');
      started.push({ u, account, ...(await identify(u, account)) });
    }
    const before = await serverStats(statsSocket, 'provider2');
    expect(before.status).toBe('UP');
    await providers[1]!.kill();
    // At once, before a health check can notice: requests for the dead instance are refused at the
    // connection and HAProxy sends them to the live one.
    await Promise.all(started.map(({ u, login, otp, account }) => finish(u, login, otp, account.userId)));
    const after = await serverStats(statsSocket, 'provider2');
    expect(after.redispatches).toBeGreaterThan(before.redispatches);
    // No user saw an error on the way.
    for (const { u } of started) expect(u.served.filter((s) => s.status >= 500)).toEqual([]);
    await eventually('HAProxy marks the dead instance down', async () => ((await serverStats(statsSocket, 'provider2')).status.startsWith('DOWN') ? true : undefined), 10_000);
    const u = await user();
    const account = await newAccount('after');
    const { login, otp } = await identify(u, account);
    await finish(u, login, otp, account.userId);
    expect(new Set(u.served.map((s) => s.by))).toEqual(new Set(['provider1']));
  }, 40_000);
});
