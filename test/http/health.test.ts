// Probes: /health/live answers while the process serves; /health/ready (and /health) only while the
// database answers with every migration applied and Redis, when configured, answers PING.
import type { ChildProcess } from 'node:child_process';
import pg from 'pg';
import { startTestServer, type TestServer } from '../support/harness.js';
import { startRedis, stopRedis } from '../support/redis-server.js';
import { freePort } from '../support/relying-party.js';
import { waitUntil } from '../mail/mail-store.js';

async function get(s: TestServer, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(new URL(path, s.issuer));
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}




describe('health probes on PostgreSQL', () => {
  let s: TestServer;
  let dbName: string;
  beforeAll(async () => {
    s = await startTestServer();
    dbName = new URL(s.config.databaseUrl!).pathname.slice(1);
  });
  afterAll(async () => {
    await admin((c) => c.query(`ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS true`)).catch(() => undefined);
    await s?.close();
  });

  test('ready names the checks; /health is the same probe', async () => {
    const ready = await get(s, '/health/ready');
    expect(ready).toEqual({ status: 200, body: { status: 'ok', database: 'postgres', checks: { database: 'ok', migrations: 'ok' } } });
    expect(await get(s, '/health')).toEqual(ready);
    expect(await get(s, '/health/live')).toEqual({ status: 200, body: { status: 'ok' } });
  });

  test('not ready while the database refuses connections, ready again when it is back; live throughout', async () => {
    // Nobody may connect, and every connection the provider holds is cut.
    await admin(async (c) => {
      await c.query(`ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS false`);
      await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [dbName]);
    });
    const down = await get(s, '/health/ready');
    expect(down.status).toBe(503);
    expect(down.body).toMatchObject({ status: 'unavailable', not_ready: ['database', 'migrations'], checks: { database: 'unavailable' } });
    expect((await get(s, '/health')).status).toBe(503);
    expect(await get(s, '/health/live')).toEqual({ status: 200, body: { status: 'ok' } });

    await admin((c) => c.query(`ALTER DATABASE "${dbName}" ALLOW_CONNECTIONS true`));
    expect((await get(s, '/health/ready')).status).toBe(200);
  });

  test('not ready while a migration is not recorded as finished', async () => {
    // A fresh provider (its migration check not yet confirmed) on a database missing a migration's record.
    const second = await startTestServer({ databaseUrl: s.config.databaseUrl!, smtp: s.smtp });
    try {
      const [last] = await s.db.sql.query<{ migration_name: string }>('SELECT migration_name FROM "_prisma_migrations" ORDER BY migration_name DESC LIMIT 1');
      await s.db.sql.query('UPDATE "_prisma_migrations" SET finished_at = NULL WHERE migration_name = $1', [last!.migration_name]);
      try {
        const r = await get(second, '/health/ready');
        expect(r.status).toBe(503);
        expect(r.body).toMatchObject({ not_ready: ['migrations'], checks: { database: 'ok', migrations: 'pending' } });
      } finally {
        await s.db.sql.query('UPDATE "_prisma_migrations" SET finished_at = now() WHERE migration_name = $1', [last!.migration_name]);
      }
      expect((await get(second, '/health/ready')).status).toBe(200);
    } finally {
      await second.close();
    }
  });
});

describe('health probes with Redis (a private redis-server, never the shared one)', () => {
  let redis: ChildProcess | undefined;
  let s: TestServer | undefined;
  let port: number;
  beforeAll(async () => {
    port = await freePort();
    redis = await startRedis(port);
    s = await startTestServer({ database: 'pglite', env: { REDIS_URL: `redis://127.0.0.1:${port}` } });
  });
  afterAll(async () => {
    // Closing the app waits for its queue, so Redis comes back first if a failed test left it down.
    if (redis && (redis.exitCode !== null || redis.signalCode !== null)) redis = await startRedis(port);
    await s?.close();
    if (redis) await stopRedis(redis);
  });

  test('ready only while Redis answers PING', async () => {
    expect(await get(s!, '/health/ready')).toEqual({ status: 200, body: { status: 'ok', database: 'pglite', checks: { database: 'ok', migrations: 'ok', redis: 'ok' } } });
    await stopRedis(redis!);
    const down = await get(s!, '/health/ready');
    expect(down).toEqual({ status: 503, body: { status: 'unavailable', not_ready: ['redis'], checks: { database: 'ok', migrations: 'ok', redis: 'unavailable' } } });
    expect((await get(s!, '/health/live')).status).toBe(200);
    redis = await startRedis(port);
    // The probe's connection comes back by itself (reconnect backoff up to 2 s).
    expect(await waitUntil(async () => (await get(s!, '/health/ready')).status === 200, 'ready again', 10_000)).toBe(true);
  });
});
