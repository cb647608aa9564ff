// Applies prisma/migrations at start-up, because Prisma's `migrate deploy` needs a native engine that
// cannot be downloaded here. The bookkeeping mirrors Prisma's own `_prisma_migrations` table, so a
// `prisma migrate deploy` run elsewhere sees the same history and agrees.
import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** One database session; every call must run on the same connection (advisory locks are per session). */
export interface SqlExecutor {
  readonly kind: 'postgres' | 'pglite';
  query<Row extends object>(sql: string, params?: readonly unknown[]): Promise<Row[]>;
  /** Runs a script of several statements, without parameters. */
  exec(script: string): Promise<void>;
}

export interface MigrationLogger {
  info(o: object, msg?: string): void;
}

export interface LocalMigration {
  name: string;
  script: string;
  checksum: string;
}

export interface ApplyMigrationsResult {
  applied: string[];
}

/** Prisma Migrate's own lock key, so we also serialise against a concurrent `prisma migrate deploy`. */
export const MIGRATION_LOCK_KEY = 72707369;

// Prisma's DDL for its history table, verbatim except IF NOT EXISTS.
const CREATE_MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)`;

/**
 * The migrations folder, found by walking up from this source file so it works from any cwd, under tsx
 * as well as from a compiled copy.
 */
export function defaultMigrationsDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'prisma', 'migrations');
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`prisma/migrations not found above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

export function checksumOf(script: string): string {
  return createHash('sha256').update(script, 'utf8').digest('hex');
}

/** Like Prisma, accept the same script with other line endings (git may convert them on checkout). */
export function scriptMatchesChecksum(script: string, checksum: string): boolean {
  return [script, script.replace(/\r\n/g, '\n'), script.replace(/\r?\n/g, '\r\n')].some((s) => checksumOf(s) === checksum);
}

/** Migration folders in apply order (Prisma sorts them by name; the timestamp prefix makes that chronological). */
export async function readMigrations(migrationsDir: string = defaultMigrationsDir()): Promise<LocalMigration[]> {
  const entries = await readdir(migrationsDir, { withFileTypes: true });
  const names = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  const migrations: LocalMigration[] = [];
  for (const name of names) {
    const file = join(migrationsDir, name, 'migration.sql');
    if (!existsSync(file)) throw new Error(`Migration folder ${name} has no migration.sql (${file})`);
    const script = await readFile(file, 'utf8');
    migrations.push({ name, script, checksum: checksumOf(script) });
  }
  return migrations;
}

interface HistoryRow {
  migration_name: string;
  checksum: string;
  finished_at: Date | string | null;
  rolled_back_at: Date | string | null;
}

/**
 * Applies the migrations not yet recorded in `_prisma_migrations`, each in its own transaction.
 * Refuses to start when an applied migration's file was edited or a migration failed earlier
 * (as `prisma migrate deploy` does), since the schema would then not be what the code expects.
 */
export async function applyMigrations(
  exec: SqlExecutor,
  log?: MigrationLogger,
  opts: { migrationsDir?: string } = {},
): Promise<ApplyMigrationsResult> {
  const migrations = await readMigrations(opts.migrationsDir);
  // A session lock, held across the per-migration transactions; PGlite is single-connection anyway.
  const locking = exec.kind === 'postgres';
  if (locking) await exec.query(`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY})`);
  try {
    await exec.exec(CREATE_MIGRATIONS_TABLE);
    const history = await exec.query<HistoryRow>(
      'SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations" ORDER BY started_at',
    );
    const live = history.filter((r) => r.rolled_back_at === null);
    const failed = live.filter((r) => r.finished_at === null);
    if (failed.length > 0) {
      const names = failed.map((r) => r.migration_name).join(', ');
      throw new Error(
        `Migration(s) ${names} failed earlier and are still marked as in progress in _prisma_migrations. ` +
          'Fix the database, then mark them with `prisma migrate resolve --rolled-back <name>` (or --applied).',
      );
    }
    const applied = new Map(live.map((r) => [r.migration_name, r.checksum]));
    const edited = migrations.filter((m) => applied.has(m.name) && !scriptMatchesChecksum(m.script, applied.get(m.name) ?? ''));
    if (edited.length > 0) {
      throw new Error(
        `Refusing to start: migration(s) ${edited.map((m) => m.name).join(', ')} were modified after they were applied ` +
          '(checksum in _prisma_migrations differs from migration.sql). Restore the original file and put the change in a new migration.',
      );
    }
    const local = new Set(migrations.map((m) => m.name));
    const unknown = [...applied.keys()].filter((name) => !local.has(name));
    // A newer release may have migrated the database already (rolling deploy): not fatal.
    if (unknown.length > 0) log?.info({ migrations: unknown }, 'database has migrations this build does not know');

    const done: string[] = [];
    for (const m of migrations) {
      if (applied.has(m.name)) continue;
      const started = Date.now();
      await applyOne(exec, m);
      done.push(m.name);
      log?.info({ migration: m.name, ms: Date.now() - started }, 'migration applied');
    }
    return { applied: done };
  } finally {
    // Must not hide the original error; a lost session releases the lock by itself.
    if (locking) await exec.query(`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY})`).catch(() => undefined);
  }
}

async function applyOne(exec: SqlExecutor, m: LocalMigration): Promise<void> {
  // Unlike Prisma, the script and its history row commit together, so a failed migration leaves nothing
  // half-done behind and the next start simply retries it.
  await exec.exec('BEGIN');
  try {
    await exec.query(
      'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, applied_steps_count) VALUES ($1, $2, $3, clock_timestamp(), 0)',
      [randomUUID(), m.checksum, m.name],
    );
    await exec.exec(m.script);
    await exec.query(
      'UPDATE "_prisma_migrations" SET finished_at = clock_timestamp(), applied_steps_count = 1 WHERE migration_name = $1 AND finished_at IS NULL',
      [m.name],
    );
    await exec.exec('COMMIT');
  } catch (error) {
    await exec.exec('ROLLBACK').catch(() => undefined);
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`Migration ${m.name} failed and was rolled back: ${reason}`, { cause: error });
  }
}
