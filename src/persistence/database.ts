// Opens the one database: PostgreSQL when a URL is configured, otherwise an in-process PGlite kept
// under the data folder, so the provider starts with nothing installed. Migrations run before use.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { PGlite } from '@electric-sql/pglite';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { PrismaClient } from './generated/client.js';
import { describeUrl, waitUntilReachable } from '../startup-checks.js';
import { lockDataDir, type DataDirLock } from './data-dir-lock.js';
import { applyMigrations, type MigrationLogger, type SqlExecutor } from './migrate.js';
import { preparedSql, type Sql } from './sql.js';

export interface Database {
  prisma: PrismaClient;
  /** Raw SQL on the same connections as `prisma`, for measured hot paths (see sql.ts). */
  sql: Sql;
  kind: 'postgres' | 'pglite';
  /**
   * Runs `fn` unless work under the same key is running already, in any process on this database: a
   * PostgreSQL advisory lock (`pg_try_advisory_lock`) taken and released on a connection of its own,
   * held for the whole call while `fn` uses the pool as usual. PGlite serves one process only (the
   * data folder is locked), so there an in-process guard is the same thing. Answers
   * `{ acquired: false }` at once when the key is taken; a lost connection releases its lock.
   */
  tryExclusive<T>(key: number, fn: () => Promise<T>): Promise<Exclusive<T>>;
  /** PostgreSQL's connection pool counters (metrics); the embedded database has none. */
  pool?: Pick<pg.Pool, 'totalCount' | 'idleCount' | 'waitingCount'>;
  close(): Promise<void>;
}

export type Exclusive<T> = { acquired: true; value: T } | { acquired: false };

export interface OpenDatabaseOptions {
  /** PostgreSQL connection string; without it the embedded PGlite is used. */
  databaseUrl?: string;
  /** Folder for local data; PGlite keeps its files in `<dataDir>/pglite`. `memory://` keeps them in memory (tests). */
  dataDir: string;
  logger?: MigrationLogger;
  /** Overrides the migrations folder (tests). */
  migrationsDir?: string;
  /**
   * PostgreSQL only: keep trying to connect for this long (exponential backoff) before failing with a
   * StartupError (the provider's start). Unset: one attempt, its error as it comes.
   */
  connectTimeoutMs?: number;
  /**
   * PostgreSQL only: how long a statement, or the wait for a pooled connection, may take before it
   * fails (pg's `query_timeout` and `connectionTimeoutMillis`; a connection whose statement timed out
   * is closed, not reused). A database that stops answering then fails requests quickly
   * (isDatabaseUnavailable: a 503) instead of holding them. Unset or 0: no limit (the admin CLI).
   * Migrations run on a connection of their own, without it.
   */
  statementTimeoutMs?: number;
}

export const MEMORY_DATA_DIR = 'memory://';

export async function openDatabase(opts: OpenDatabaseOptions): Promise<Database> {
  return opts.databaseUrl ? openPostgres(opts.databaseUrl, opts) : openPglite(opts);
}

async function openPostgres(url: string, opts: OpenDatabaseOptions): Promise<Database> {
  if (opts.connectTimeoutMs !== undefined) await waitForPostgres(url, opts.connectTimeoutMs, opts.logger);
  // Migrations first, on a connection of their own: no statement time limit (an index on a large
  // table may take minutes), and closed afterwards, so the session (and any advisory lock) surely ends.
  const migrator = new pg.Client({ connectionString: url });
  migrator.on('error', () => undefined);
  await migrator.connect();
  try {
    await applyMigrations(pgExecutor(migrator), opts.logger, { migrationsDir: opts.migrationsDir });
  } finally {
    await migrator.end().catch(() => undefined);
  }
  const limit = opts.statementTimeoutMs ? { query_timeout: opts.statementTimeoutMs, connectionTimeoutMillis: opts.statementTimeoutMs } : {};
  const pool = new pg.Pool({ connectionString: url, ...limit });
  // An idle client losing its server must not crash the process; the next query reports the error.
  pool.on('error', (err) => opts.logger?.info({ err: err.message }, 'postgres pool client error'));
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  return {
    prisma,
    sql: preparedSql(pool),
    kind: 'postgres',
    tryExclusive: (key, fn) => tryAdvisoryLock(pool, key, fn),
    pool,
    async close() {
      await prisma.$disconnect();
      await pool.end();
    },
  };
}

async function openPglite(opts: OpenDatabaseOptions): Promise<Database> {
  let dataDir: string | undefined;
  let lock: DataDirLock | undefined;
  if (opts.dataDir !== MEMORY_DATA_DIR) {
    dataDir = join(opts.dataDir, 'pglite');
    await mkdir(dataDir, { recursive: true });
    // One process per folder (DataDirLockedError otherwise), before PGlite reads anything.
    lock = await lockDataDir(opts.dataDir);
  }
  // Loaded only here: with DATABASE_URL set, the embedded database's WASM never enters the process.
  const [{ PGlite }, { PrismaPGlite }] = await Promise.all([import('@electric-sql/pglite'), import('pglite-prisma-adapter')]);
  let db: PGlite | undefined;
  try {
    db = await PGlite.create(dataDir);
    await applyMigrations(pgliteExecutor(db), opts.logger, { migrationsDir: opts.migrationsDir });
  } catch (error) {
    await db?.close().catch(() => undefined);
    await lock?.release();
    throw error;
  }
  const pglite = db;
  const running = new Set<number>();
  const prisma = new PrismaClient({ adapter: new PrismaPGlite(pglite) });
  return {
    prisma,
    sql: { query: async <Row extends object>(text: string, params: readonly unknown[] = []) => (await pglite.query<Row>(text, [...params])).rows },
    kind: 'pglite',
    async tryExclusive<T>(key: number, fn: () => Promise<T>): Promise<Exclusive<T>> {
      if (running.has(key)) return { acquired: false };
      running.add(key);
      try {
        return { acquired: true, value: await fn() };
      } finally {
        running.delete(key);
      }
    },
    async close() {
      await prisma.$disconnect();
      if (!pglite.closed) await pglite.close();
      await lock?.release();
    },
  };
}

/** Connects (and disconnects) until the server accepts a session; see waitUntilReachable. */
async function waitForPostgres(url: string, timeoutMs: number, logger: MigrationLogger | undefined): Promise<void> {
  const where = describeUrl(url, 5432);
  const onRetry = (reason: string, delayMs: number) => logger?.info({ database: where, reason, retryInMs: delayMs }, 'database not reachable yet');
  await waitUntilReachable({ what: 'the database', where, timeoutMs, onRetry }, async (timeLeftMs) => {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: Math.min(timeLeftMs, 5_000) });
    client.on('error', () => {});
    try {
      await client.connect();
    } finally {
      await client.end().catch(() => undefined);
    }
  });
}

/**
 * A session-level advisory lock on a dedicated pool client: taken and released on the same connection
 * (the pool would otherwise hand the unlock to another session). The client is destroyed rather than
 * returned when anything failed, so a lock whose release is uncertain ends with its session.
 */
async function tryAdvisoryLock<T>(pool: pg.Pool, key: number, fn: () => Promise<T>): Promise<Exclusive<T>> {
  const client = await pool.connect();
  let healthy = false;
  try {
    const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS locked', [key]);
    if (!rows[0]?.locked) {
      healthy = true;
      return { acquired: false };
    }
    try {
      return { acquired: true, value: await fn() };
    } finally {
      // A failed unlock must not hide fn's outcome; the destroyed session releases the lock instead.
      healthy = await client
        .query<{ unlocked: boolean }>('SELECT pg_advisory_unlock($1::bigint) AS unlocked', [key])
        .then((r) => r.rows[0]?.unlocked === true, () => false);
    }
  } finally {
    client.release(!healthy);
  }
}

function pgExecutor(client: pg.ClientBase): SqlExecutor {
  return {
    kind: 'postgres',
    async query<Row extends object>(sql: string, params: readonly unknown[] = []) {
      const result = await client.query<Row>(sql, [...params]);
      return result.rows;
    },
    async exec(script: string) {
      // Without parameters pg uses the simple protocol, which accepts several statements.
      await client.query(script);
    },
  };
}

function pgliteExecutor(db: PGlite): SqlExecutor {
  return {
    kind: 'pglite',
    async query<Row extends object>(sql: string, params: readonly unknown[] = []) {
      const result = await db.query<Row>(sql, [...params]);
      return result.rows;
    },
    async exec(script: string) {
      await db.exec(script);
    },
  };
}
