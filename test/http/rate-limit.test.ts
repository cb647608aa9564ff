import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import Koa from 'koa';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createRateLimits, RATE_LIMIT_TABLE, TooManyRequestsError, type LimitKind, type RateLimits } from '../../src/http/rate-limit.js';
import { rateLimitByIp } from '../../src/http/rate-limit.middleware.js';

const REDIS_URL = 'redis://127.0.0.1:6379';
const PG_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
const dbName = `rl_test_${process.pid}_${randomBytes(4).toString('hex')}`;
const runPrefix = `test-rl-${randomBytes(4).toString('hex')}`;
let seq = 0;
const uniquePrefix = () => `${runPrefix}:${++seq}`;

const defaultLimits = { ipPerMinute: 4, accountOtpPer15Min: 3, otpMailsPerHour: 2 };
type Limits = typeof defaultLimits;
type StoreName = 'memory' | 'postgres' | 'redis';

function storeConfig(store: StoreName, rateLimits: Limits = defaultLimits) {
  return {
    rateLimits,
    redisUrl: store === 'redis' ? REDIS_URL : undefined,
    databaseUrl: store === 'postgres' ? `postgres://postgres@127.0.0.1:5432/${dbName}` : undefined,
  };
}

const open: RateLimits[] = [];
async function make(store: StoreName, rateLimits?: Limits): Promise<RateLimits> {
  const limits = await createRateLimits({ config: storeConfig(store, rateLimits), keyPrefix: uniquePrefix() });
  open.push(limits);
  return limits;
}

beforeAll(async () => {
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${dbName}"`);
  await admin.end();
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((l) => l.close()));
});

afterAll(async () => {
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
  await admin.end();
  const redis = new Redis(REDIS_URL);
  const keys = await redis.keys(`${runPrefix}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
});

describe.each<StoreName>(['memory', 'postgres', 'redis'])('rate limits on %s', (store) => {
  it('allows N then refuses with a Retry-After within the window', async () => {
    const limits = await make(store);
    for (let i = 1; i <= defaultLimits.ipPerMinute; i++) {
      const d = await limits.consume('ip', '203.0.113.7');
      expect(d).toEqual({ allowed: true, retryAfterSeconds: 0, remaining: defaultLimits.ipPerMinute - i });
    }
    const refused = await limits.consume('ip', '203.0.113.7');
    expect(refused.allowed).toBe(false);
    expect(refused.remaining).toBe(0);
    expect(refused.retryAfterSeconds).toBeGreaterThanOrEqual(58);
    expect(refused.retryAfterSeconds).toBeLessThanOrEqual(60);
  });

  it('keeps keys and kinds independent', async () => {
    const limits = await make(store);
    for (let i = 0; i < defaultLimits.ipPerMinute; i++) await limits.consume('ip', 'a');
    expect((await limits.consume('ip', 'a')).allowed).toBe(false);
    expect(await limits.consume('ip', 'b')).toMatchObject({ allowed: true, remaining: defaultLimits.ipPerMinute - 1 });
    // Same key string under another kind is another counter.
    expect(await limits.consume('account_otp', 'a')).toMatchObject({ allowed: true, remaining: defaultLimits.accountOtpPer15Min - 1 });
    // Another instance with another prefix does not see this one's counts.
    const other = await make(store);
    expect((await other.consume('ip', 'a')).allowed).toBe(true);
  });

  it('reset clears a key', async () => {
    const limits = await make(store);
    for (let i = 0; i < defaultLimits.accountOtpPer15Min; i++) await limits.consume('account_otp', 'p-01-usr012');
    expect((await limits.consume('account_otp', 'p-01-usr012')).allowed).toBe(false);
    await limits.reset('account_otp', 'p-01-usr012');
    expect(await limits.consume('account_otp', 'p-01-usr012')).toMatchObject({ allowed: true, remaining: defaultLimits.accountOtpPer15Min - 1 });
    await limits.reset('ip', 'never-seen'); // resetting an unknown key is harmless
  });

  it.each<[LimitKind, keyof Limits, number]>([
    ['account_otp', 'accountOtpPer15Min', 900],
    ['otp_mail', 'otpMailsPerHour', 3600],
  ])('%s uses its own limit and window', async (kind, limitKey, windowSeconds) => {
    const limits = await make(store);
    for (let i = 0; i < defaultLimits[limitKey]; i++) expect((await limits.consume(kind, 'user@example.jp')).allowed).toBe(true);
    const refused = await limits.consume(kind, 'user@example.jp');
    expect(refused.allowed).toBe(false);
    expect(refused.retryAfterSeconds).toBeGreaterThan(windowSeconds - 5);
    expect(refused.retryAfterSeconds).toBeLessThanOrEqual(windowSeconds);
  });

  it('counts points and hashes over-long keys', async () => {
    const limits = await make(store);
    expect(await limits.consume('ip', 'x', 3)).toMatchObject({ allowed: true, remaining: 1 });
    expect((await limits.consume('ip', 'x', 2)).allowed).toBe(false);
    const long = 'k'.repeat(500); // longer than the pg key column
    expect((await limits.consume('ip', long)).allowed).toBe(true);
    expect(await limits.consume('ip', long)).toMatchObject({ allowed: true, remaining: defaultLimits.ipPerMinute - 2 });
  });

  it('allows exactly the limit under 50 parallel consumes', async () => {
    const limits = await make(store, { ...defaultLimits, ipPerMinute: 5 });
    const results = await Promise.all(Array.from({ length: 50 }, () => limits.consume('ip', 'burst')));
    expect(results.filter((r) => r.allowed)).toHaveLength(5);
    expect(results.filter((r) => !r.allowed).every((r) => r.retryAfterSeconds > 0)).toBe(true);
  });

  it('reports latency per consume (printed, not asserted)', async () => {
    const limits = await make(store, { ...defaultLimits, ipPerMinute: 1_000_000 });
    for (let i = 0; i < 20; i++) await limits.consume('ip', `warm-${i}`);
    const n = 500;
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await limits.consume('ip', `k-${i % 50}`);
    const perCallMs = Number(process.hrtime.bigint() - start) / 1e6 / n;
    console.log(`rate-limit ${store}: ${perCallMs.toFixed(3)} ms per sequential consume (n=${n})`);
  });
});

describe('postgres store', () => {
  it('creates its table before the first consume', async () => {
    const limits = await make('postgres');
    // The very first call must not hit "Table is not created yet".
    expect((await limits.consume('ip', 'first')).allowed).toBe(true);
    const client = new pg.Client({ connectionString: storeConfig('postgres').databaseUrl });
    await client.connect();
    const { rows } = await client.query<{ n: string }>(`SELECT count(*) AS n FROM "${RATE_LIMIT_TABLE}"`);
    await client.end();
    expect(Number(rows[0]?.n)).toBeGreaterThan(0);
  });

  it('fails to start when the database is unreachable', async () => {
    await expect(
      createRateLimits({ config: { rateLimits: defaultLimits, redisUrl: undefined, databaseUrl: 'postgres://postgres@127.0.0.1:1/x' } }),
    ).rejects.toThrow();
  });
});

describe('redis store failure', () => {
  it('fails open for ip and account_otp, closed for otp_mail (503, not 429), and reports the error', async () => {
    const client = new Redis(REDIS_URL);
    await once(client, 'ready');
    const errors: Array<LimitKind | undefined> = [];
    const limits = await createRateLimits({
      config: storeConfig('memory'),
      redis: client,
      keyPrefix: uniquePrefix(),
      onStoreError: (_err, kind) => errors.push(kind),
    });
    open.push(limits);
    expect((await limits.consume('otp_mail', 'u')).allowed).toBe(true);
    client.disconnect(); // Redis "goes down"
    expect((await limits.consume('ip', '198.51.100.1')).allowed).toBe(true);
    expect((await limits.consume('account_otp', 'u')).allowed).toBe(true);
    await expect(limits.consume('otp_mail', 'u')).rejects.toMatchObject({ status: 503, code: 'service_unavailable', retryAfterSeconds: 30 });
    expect(errors).toEqual(['ip', 'account_otp', 'otp_mail']);
    // The per-process fallback still limits a flooding IP.
    for (let i = 0; i < defaultLimits.ipPerMinute; i++) await limits.consume('ip', '198.51.100.2');
    expect((await limits.consume('ip', '198.51.100.2')).allowed).toBe(false);
  });

  it('leaves a client it was given open on close', async () => {
    const client = new Redis(REDIS_URL);
    await once(client, 'ready');
    const limits = await createRateLimits({ config: storeConfig('memory'), redis: client, keyPrefix: uniquePrefix() });
    expect((await limits.consume('ip', 'z')).allowed).toBe(true);
    await limits.close();
    expect(client.status).toBe('ready');
    expect(await client.ping()).toBe('PONG');
    await client.quit();
  });

  it('fails to start when its own Redis is unreachable', async () => {
    await expect(
      createRateLimits({ config: { rateLimits: defaultLimits, redisUrl: 'redis://127.0.0.1:1', databaseUrl: undefined } }),
    ).rejects.toThrow();
  });
});

describe('rateLimitByIp middleware', () => {
  async function serve(app: Koa): Promise<{ url: string; stop: () => Promise<void> }> {
    const server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    return {
      url: `http://127.0.0.1:${port}/`,
      stop: async () => {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  }

  it('answers 429 with Retry-After through an error-handling middleware', async () => {
    const limits = await make('memory', { ...defaultLimits, ipPerMinute: 2 });
    const app = new Koa();
    app.use(async (ctx, next) => {
      try {
        await next();
      } catch (err) {
        if (!(err instanceof TooManyRequestsError)) throw err;
        ctx.status = err.status;
        ctx.body = { error: err.code, retryAfterSeconds: err.retryAfterSeconds };
      }
    });
    app.use(rateLimitByIp(limits, (ctx) => ctx.get('x-test-ip')));
    app.use((ctx) => {
      ctx.body = 'ok';
    });
    const { url, stop } = await serve(app);
    try {
      const get = () => fetch(url, { headers: { 'x-test-ip': '192.0.2.1' } });
      expect((await get()).status).toBe(200);
      expect((await get()).status).toBe(200);
      const refused = await get();
      expect(refused.status).toBe(429);
      const retryAfter = Number(refused.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThanOrEqual(58);
      expect(retryAfter).toBeLessThanOrEqual(60);
      expect(await refused.json()).toEqual({ error: 'too_many_requests', retryAfterSeconds: retryAfter });
      // Another IP is unaffected.
      expect((await fetch(url, { headers: { 'x-test-ip': '192.0.2.2' } })).status).toBe(200);
    } finally {
      await stop();
    }
  });

  it("keeps Retry-After with Koa's default error handler", async () => {
    const limits = await make('memory', { ...defaultLimits, ipPerMinute: 1 });
    const app = new Koa();
    app.silent = true;
    app.use(rateLimitByIp(limits, () => 'same'));
    app.use((ctx) => {
      ctx.body = 'ok';
    });
    const { url, stop } = await serve(app);
    try {
      expect((await fetch(url)).status).toBe(200);
      const refused = await fetch(url);
      expect(refused.status).toBe(429);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(await refused.text()).toBe('Too many requests');
    } finally {
      await stop();
    }
  });
});
