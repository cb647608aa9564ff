import type { Database } from './database.js';
import { readMigrations } from './migrate.js';

/** A probe waits no longer than this for the database: a hung connection attempt means "not ready". */
const PROBE_TIMEOUT_MS = 2000;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** True when the database answers a trivial query (within 2 s). */
export async function pingDatabase(db: Database): Promise<boolean> {
  try {
    await withTimeout(db.sql.query('SELECT 1'), PROBE_TIMEOUT_MS);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether every migration folder is recorded as finished in `_prisma_migrations`. Once they all are,
 * the answer is kept: migrations only ever get added by a newer release, which starts new processes.
 */
export function migrationCheck(db: Database, migrationsDir?: string): () => Promise<{ applied: boolean; missing: string[] }> {
  let confirmed = false;
  return async () => {
    if (confirmed) return { applied: true, missing: [] };
    const [local, rows] = await Promise.all([
      readMigrations(migrationsDir),
      withTimeout(db.sql.query<{ migration_name: string }>('SELECT migration_name FROM "_prisma_migrations" WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL'), PROBE_TIMEOUT_MS),
    ]);
    const done = new Set(rows.map((r) => r.migration_name));
    const missing = local.map((m) => m.name).filter((n) => !done.has(n));
    confirmed = missing.length === 0;
    return { applied: confirmed, missing };
  };
}

/**
 * The outbox's figures for the mail gauges in one statement: messages waiting, the oldest one's age,
 * and messages given up (BullMQ's given-up jobs are recorded there too).
 */
export async function mailOutboxFigures(db: Database): Promise<{ pending: number; oldestSeconds: number; failed: number }> {
  const [row] = await db.sql.query<{ pending: number | string; oldest: number | string | null; failed: number | string }>(
    `SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
            EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE status = 'pending'))::float8 AS oldest,
            count(*) FILTER (WHERE status = 'failed') AS failed
       FROM mail_outbox WHERE status IN ('pending', 'failed')`,
  );
  return { pending: Number(row?.pending ?? 0), oldestSeconds: Math.max(0, Number(row?.oldest ?? 0)), failed: Number(row?.failed ?? 0) };
}
