import Router from '@koa/router';
import type { Context } from 'koa';
import { Redis } from 'ioredis';
import type { Database } from '../persistence/database.js';
import { migrationCheck, pingDatabase } from '../persistence/health.js';

const REDIS_PING_TIMEOUT_MS = 1000;

/** Answers whether Redis takes a PING now, on its own connection (opened at the first probe). */
export function redisProbe(url: string): { ping(): Promise<boolean>; close(): Promise<void> } {
  let client: Redis | undefined;
  return {
    async ping() {
      if (!client) {
        client = new Redis(url, {
          lazyConnect: true,
          enableOfflineQueue: false,
          maxRetriesPerRequest: 0,
          connectTimeout: REDIS_PING_TIMEOUT_MS,
          retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
        });
        client.on('error', () => {}); // failures show as a failed PING
      }
      const redis = client;
      // The first connection's ready check counts too: a Redis that accepts connections but does not
      // answer (a stopped process) would otherwise hold the probe forever.
      const pong = (async () => {
        if (redis.status === 'wait') await redis.connect();
        return redis.ping();
      })();
      pong.catch(() => undefined);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), REDIS_PING_TIMEOUT_MS)));
      try {
        return (await Promise.race([pong, timeout])) === 'PONG';
      } catch {
        return false;
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      if (!client || client.status === 'end') return;
      await client.quit().catch(() => client?.disconnect());
    },
  };
}

type Check = 'database' | 'migrations' | 'redis';

/**
 * Probes for load balancers and orchestrators. `/health/live`: the process serves requests (always
 * 200). `/health/ready`: the database answers, every migration is applied and Redis (when configured)
 * answers PING; otherwise 503 naming what is not ready. `/health` is the readiness probe too.
 */
export function healthRouter(deps: { db: Database; redis?: { ping(): Promise<boolean> }; migrationsDir?: string }) {
  const router = new Router();
  const migrations = migrationCheck(deps.db, deps.migrationsDir);

  const ready = async (ctx: Context) => {
    const checks: Partial<Record<Check, 'ok' | 'unavailable' | 'pending'>> = {};
    const database = await pingDatabase(deps.db);
    checks.database = database ? 'ok' : 'unavailable';
    if (database) {
      const m = await migrations().catch(() => undefined);
      checks.migrations = !m ? 'unavailable' : m.applied ? 'ok' : 'pending';
    } else {
      checks.migrations = 'unavailable';
    }
    if (deps.redis) checks.redis = (await deps.redis.ping()) ? 'ok' : 'unavailable';
    const notReady = (Object.keys(checks) as Check[]).filter((k) => checks[k] !== 'ok');
    ctx.status = notReady.length ? 503 : 200;
    ctx.body = notReady.length ? { status: 'unavailable', not_ready: notReady, checks } : { status: 'ok', database: deps.db.kind, checks };
  };

  router.get('/health/live', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  router.get('/health/ready', ready);
  router.get('/health', ready);
  return router;
}
