import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import {
  RateLimiterMemory,
  RateLimiterPostgres,
  RateLimiterRedis,
  RateLimiterRes,
  type RateLimiterAbstract,
} from 'rate-limiter-flexible';
import type { AppConfig } from '../config/index.js';
import { preparedSql } from '../persistence/sql.js';
import { ServiceUnavailableError } from './errors.js';

/** What is being limited: requests per source IP, OTP attempts per account, OTP mails per account. */
export type LimitKind = 'ip' | 'account_otp' | 'otp_mail';

/** `retryAfterSeconds` is 0 when allowed; `remaining` is what is left in the current window. */
export interface LimitDecision {
  allowed: boolean;
  retryAfterSeconds: number;
  remaining: number;
}

/** One count against one limit. */
export interface LimitCheck {
  kind: LimitKind;
  key: string;
}

export interface RateLimits {
  /** Throws ServiceUnavailableError when the store is unreachable and the kind may not fall back (otp_mail). */
  consume(kind: LimitKind, key: string, points?: number): Promise<LimitDecision>;
  /**
   * Counts several limits of one request in one round trip (one statement on PostgreSQL, concurrent
   * commands on Redis). Refused when any is refused, with the longest wait.
   */
  consumeAll(checks: readonly LimitCheck[]): Promise<LimitDecision>;
  /** Forget a key's count (e.g. after a successful login). Best effort: store errors are reported, not thrown. */
  reset(kind: LimitKind, key: string): Promise<void>;
  /** Releases the pg pool / Redis connection this module created; a client passed in is left open. */
  close(): Promise<void>;
}

type RateLimitStore = 'redis' | 'postgres' | 'memory';

/**
 * The limits of one request, counted together where the request first needs an answer: the IP limit
 * of a login step and that step's own limit (codes mailed, codes tried) in one round trip.
 */
export class LimitBatch {
  private pending: LimitCheck[] = [];

  constructor(private readonly limits: Pick<RateLimits, 'consumeAll'>) {}

  add(...checks: LimitCheck[]): void {
    this.pending.push(...checks);
  }

  get uncounted(): boolean {
    return this.pending.length > 0;
  }

  /** Counts what was added since the last count. */
  count(): Promise<LimitDecision> {
    const checks = this.pending;
    this.pending = [];
    return this.limits.consumeAll(checks);
  }
}

/** Thrown by the rate-limit middleware; `headers` and `expose` let Koa's default handler render it too. */
export class TooManyRequestsError extends Error {
  status = 429;
  code = 'too_many_requests';
  expose = true;
  readonly headers: Record<string, string>;
  constructor(readonly retryAfterSeconds: number) {
    super('Too many requests');
    this.name = 'TooManyRequestsError';
    this.headers = { 'Retry-After': String(retryAfterSeconds) };
  }
}

export interface CreateRateLimitsOptions {
  config: Pick<AppConfig, 'rateLimits' | 'redisUrl' | 'databaseUrl'>;
  /** Prefix of every stored key; tests use a unique one to isolate their counters. */
  keyPrefix?: string;
  /** An existing ioredis client (e.g. shared with BullMQ); takes precedence over `config.redisUrl`. */
  redis?: Redis;
  /** A store call slower than this counts as a store failure (default 1000 ms). */
  storeTimeoutMs?: number;
  /** Told about every store failure so the caller can log it (kind is unset for pool/sweeper errors). */
  onStoreError?: (error: unknown, kind?: LimitKind) => void;
  /** Told about every refused decision (metrics). */
  onRefused?: (kind: LimitKind) => void;
}

/** Table the PostgreSQL store keeps its counters in (created by rate-limiter-flexible). */
export const RATE_LIMIT_TABLE = 'rate_limits';

// Retry-After of the 503 when otp_mail cannot be checked because the store is unreachable.
const STORE_DOWN_RETRY_SECONDS = 30;
// The pg table's key column is varchar(255); longer keys are hashed so they can't fail inserts.
const MAX_PLAIN_KEY_LENGTH = 200;

/**
 * What to do when the shared store fails (Redis down, PG unreachable, timeout):
 * - `ip` falls back to a per-process memory limiter: the site stays up, and one instance still caps a
 *   flooding IP (the effective limit is multiplied by the number of instances, an acceptable loss).
 * - `account_otp` does the same: the atomic lockout counter in the database remains the hard guard
 *   against guessing, so refusing every OTP entry during an outage would only cost availability.
 * - `otp_mail` refuses with 503 (service unavailable, not "too many requests": the user did nothing
 *   wrong): a per-process fallback would let N instances send N times the mails, and mail bombing a
 *   user's devices is worse than a delayed login.
 * This is our own handling rather than rate-limiter-flexible's `insuranceLimiter` so the failure is
 * reported (onStoreError), bounded by a timeout, and the fail-closed case needs no fake limiter.
 */
const ON_STORE_ERROR: Record<LimitKind, 'memory' | 'refuse'> = {
  ip: 'memory',
  account_otp: 'memory',
  otp_mail: 'refuse',
};

interface KindLimiter {
  store: RateLimiterAbstract;
  fallback: RateLimiterMemory | undefined;
}

export async function createRateLimits(opts: CreateRateLimitsOptions): Promise<RateLimits> {
  const { config } = opts;
  const prefix = opts.keyPrefix ?? 'rl';
  const timeoutMs = opts.storeTimeoutMs ?? 1000;
  const report = opts.onStoreError ?? (() => {});
  const windows: Record<LimitKind, { points: number; duration: number }> = {
    ip: { points: config.rateLimits.ipPerMinute, duration: 60 },
    account_otp: { points: config.rateLimits.accountOtpPer15Min, duration: 900 },
    otp_mail: { points: config.rateLimits.otpMailsPerHour, duration: 3600 },
  };
  const kinds = Object.keys(windows) as LimitKind[];
  const base = (kind: LimitKind) => ({ ...windows[kind], keyPrefix: `${prefix}:${kind}` });

  let store: RateLimitStore;
  let makeStore: (kind: LimitKind) => RateLimiterAbstract;
  // Set for the PostgreSQL store: several checks in one statement.
  let consumeInOneStatement: ((checks: readonly LimitCheck[]) => Promise<LimitDecision[]>) | undefined;
  const cleanups: Array<() => Promise<void>> = [];

  const client = opts.redis ?? (config.redisUrl ? await connectRedis(config.redisUrl, timeoutMs) : undefined);
  if (client) {
    store = 'redis';
    if (!opts.redis) cleanups.push(() => quitRedis(client));
    // rejectIfRedisNotReady: with ioredis' offline queue a command would otherwise wait for reconnection.
    makeStore = (kind) => new RateLimiterRedis({ ...base(kind), storeClient: client, rejectIfRedisNotReady: true });
  } else if (config.databaseUrl) {
    store = 'postgres';
    // query_timeout: a statement the database never answers (a partition) fails, and its connection is
    // closed rather than kept: without it every connection stuck then stayed taken, and the mail
    // limit refused (503) every login after the database was back.
    const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 10, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
    // Without a listener an idle client's error (e.g. server restart) would crash the process.
    pool.on('error', (err) => report(err));
    cleanups.push(() => pool.end());
    const pgOptions = (kind: LimitKind) => ({
      ...base(kind),
      storeClient: pool,
      storeType: 'pool',
      tableName: RATE_LIMIT_TABLE,
      // One sweeper for the shared table, owned here so close() can stop it.
      clearExpiredByTimeout: false,
    });
    try {
      // The constructor starts CREATE TABLE IF NOT EXISTS and consumes fail until its callback has
      // run, so create the table through the first limiter, wait, and tell the others it exists.
      await new Promise<void>((resolve, reject) => {
        new RateLimiterPostgres(pgOptions('ip'), (err?: unknown) => (err ? reject(err) : resolve()));
      });
    } catch (err) {
      await pool.end();
      throw err;
    }
    makeStore = (kind) => new RateLimiterPostgres({ ...pgOptions(kind), tableCreated: true });
    // A named statement per number of rows: parsed once per connection, not on every request.
    const sql = preparedSql(pool);
    consumeInOneStatement = async (checks) => {
      // rate-limiter-flexible's own upsert (same table, keys and window rule), for several keys at once.
      const now = Date.now();
      const values: unknown[] = [now];
      const rows = checks.map((c) => {
        values.push(`${prefix}:${c.kind}:${storageKey(c.key)}`, 1, now + windows[c.kind].duration * 1000);
        const n = values.length;
        return `($${n - 2}, $${n - 1}, $${n})`;
      });
      const stored = await sql.query<{ key: string; points: number; expire: string | null }>(
        `INSERT INTO "${RATE_LIMIT_TABLE}" AS t (key, points, expire) VALUES ${rows.join(', ')}
         ON CONFLICT (key) DO UPDATE SET
           points = CASE WHEN t.expire <= $1 THEN EXCLUDED.points ELSE t.points + EXCLUDED.points END,
           expire = CASE WHEN t.expire <= $1 THEN EXCLUDED.expire ELSE t.expire END
         RETURNING key, points, expire`,
        values,
      );
      const byKey = new Map(stored.map((r) => [r.key, r]));
      return checks.map((c) => {
        const row = byKey.get(`${prefix}:${c.kind}:${storageKey(c.key)}`);
        const points = row?.points ?? 1;
        const msBeforeNext = row?.expire ? Math.max(Number(row.expire) - Date.now(), 0) : 0;
        const limit = windows[c.kind].points;
        return { allowed: points <= limit, retryAfterSeconds: points <= limit ? 0 : Math.max(1, Math.ceil(msBeforeNext / 1000)), remaining: Math.max(limit - points, 0) };
      });
    };
    const sweeper = setInterval(() => {
      pool
        .query(`DELETE FROM "${RATE_LIMIT_TABLE}" WHERE expire < $1`, [Date.now() - 3_600_000])
        .catch((err: unknown) => report(err));
    }, 300_000);
    sweeper.unref();
    cleanups.unshift(async () => clearInterval(sweeper));
  } else {
    store = 'memory';
    makeStore = (kind) => new RateLimiterMemory(base(kind));
  }

  const limiters = Object.fromEntries(
    kinds.map((kind): [LimitKind, KindLimiter] => [
      kind,
      {
        store: makeStore(kind),
        fallback: store !== 'memory' && ON_STORE_ERROR[kind] === 'memory' ? new RateLimiterMemory(base(kind)) : undefined,
      },
    ]),
  ) as Record<LimitKind, KindLimiter>;

  const guard = <T>(p: Promise<T>): Promise<T> => (store === 'memory' ? p : withTimeout(p, timeoutMs));
  let closed = false;

  const counted = (kind: LimitKind, d: LimitDecision): LimitDecision => {
    if (!d.allowed) opts.onRefused?.(kind);
    return d;
  };
  const decide = async (kind: LimitKind, key: string, points: number): Promise<LimitDecision> => {
    const limiter = limiters[kind];
    const k = storageKey(key);
    try {
      return decision(true, await guard(limiter.store.consume(k, points)));
    } catch (err) {
      if (err instanceof RateLimiterRes) return decision(false, err);
      report(err, kind);
      if (!limiter.fallback) throw new ServiceUnavailableError(STORE_DOWN_RETRY_SECONDS);
      try {
        return decision(true, await limiter.fallback.consume(k, points));
      } catch (fallbackErr) {
        if (fallbackErr instanceof RateLimiterRes) return decision(false, fallbackErr);
        throw fallbackErr;
      }
    }
  };
  const consume = async (kind: LimitKind, key: string, points = 1): Promise<LimitDecision> => counted(kind, await decide(kind, key, points));

  return {
    consume,
    async consumeAll(checks) {
      // Each key once: a statement may not update the same row twice.
      const unique = [...new Map(checks.map((c) => [`${c.kind}:${c.key}`, c])).values()];
      if (unique.length === 0) return { allowed: true, retryAfterSeconds: 0, remaining: Number.MAX_SAFE_INTEGER };
      let decisions: LimitDecision[] | undefined;
      if (consumeInOneStatement && unique.length > 1) {
        try {
          decisions = (await guard(consumeInOneStatement(unique))).map((d, i) => counted(unique[i]!.kind, d));
        } catch (err) {
          // Counted one by one instead, each with its own rule for an unreachable store.
          report(err);
        }
      }
      decisions ??= await Promise.all(unique.map((c) => consume(c.kind, c.key)));
      const refused = decisions.filter((d) => !d.allowed);
      if (refused.length) return { allowed: false, retryAfterSeconds: Math.max(...refused.map((d) => d.retryAfterSeconds)), remaining: 0 };
      return { allowed: true, retryAfterSeconds: 0, remaining: Math.min(...decisions.map((d) => d.remaining)) };
    },
    async reset(kind, key) {
      const limiter = limiters[kind];
      const k = storageKey(key);
      await limiter.fallback?.delete(k);
      try {
        await guard(limiter.store.delete(k));
      } catch (err) {
        report(err, kind);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const cleanup of cleanups) await cleanup();
    },
  };
}

function decision(allowed: boolean, res: RateLimiterRes): LimitDecision {
  return {
    allowed,
    // At least 1 s when refused: Retry-After: 0 would invite an immediate retry.
    retryAfterSeconds: allowed ? 0 : Math.max(1, Math.ceil(res.msBeforeNext / 1000)),
    remaining: res.remainingPoints,
  };
}

function storageKey(key: string): string {
  return key.length <= MAX_PLAIN_KEY_LENGTH ? key : `sha256:${createHash('sha256').update(key).digest('hex')}`;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`rate-limit store timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function connectRedis(url: string, timeoutMs: number): Promise<Redis> {
  let wasReady = false;
  // No offline queue and one retry: a rate-limit check must answer now, not after Redis comes back.
  const client = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: timeoutMs,
    // Give up at once if the first connect fails (start-up error), reconnect forever after that.
    retryStrategy: (attempt) => (wasReady ? Math.min(attempt * 200, 2000) : null),
  });
  // ioredis prints "Unhandled error event" without a listener; failures surface through commands.
  client.on('error', () => {});
  // Not disconnect() after a failed connect: its 2 s "destroy the stream" timer would wait for a
  // close event the dead socket already emitted, and keep the process alive.
  await client.connect();
  wasReady = true;
  return client;
}

async function quitRedis(client: Redis): Promise<void> {
  if (client.status === 'end') return;
  try {
    await client.quit();
  } catch {
    client.disconnect();
  }
}
