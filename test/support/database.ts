// Fresh, uniquely named PostgreSQL databases for tests, on the server named by PGHOST/PGPORT/PGUSER
// (default 127.0.0.1:5432, user postgres, else root: both exist with trust auth on the dev machines).
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { MEMORY_DATA_DIR, openDatabase, type Database } from '../../src/persistence/database.js';

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

const host = process.env.PGHOST ?? '127.0.0.1';
const port = Number(process.env.PGPORT ?? 5432);
const candidateUsers = process.env.PGUSER ? [process.env.PGUSER] : ['postgres', 'root'];
let adminUser: Promise<string> | undefined;

async function withAdmin<T>(user: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ host, port, user, database: 'postgres' });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

function findAdminUser(): Promise<string> {
  adminUser ??= (async () => {
    const errors: string[] = [];
    for (const user of candidateUsers) {
      try {
        await withAdmin(user, (c) => c.query('SELECT 1'));
        return user;
      } catch (error) {
        errors.push(`${user}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    throw new Error(`No PostgreSQL at ${host}:${port} for tests (${errors.join('; ')})`);
  })();
  return adminUser;
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export async function createTestDatabase(prefix: string): Promise<TestDatabase> {
  const user = await findAdminUser();
  const safePrefix = prefix.toLowerCase().replace(/[^a-z0-9]+/g, '_').slice(0, 30);
  const name = `t_${safePrefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  await withAdmin(user, (c) => c.query(`CREATE DATABASE ${quoteIdent(name)}`));
  const auth = process.env.PGPASSWORD ? `${encodeURIComponent(user)}:${encodeURIComponent(process.env.PGPASSWORD)}` : encodeURIComponent(user);
  // A socket directory can't stand in the host part of a URL; libpq-style ?host= carries it.
  const url = host.startsWith('/')
    ? `postgresql://${auth}@localhost:${port}/${name}?host=${encodeURIComponent(host)}`
    : `postgresql://${auth}@${host}:${port}/${name}`;
  return {
    url,
    async drop() {
      await withAdmin(user, async (c) => {
        // A leaked connection would make DROP DATABASE fail; end them first.
        await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
        await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)}`);
      });
    },
  };
}

/**
 * The two databases the provider runs on, for `describe.each`: a fresh PostgreSQL database (named
 * after `prefix`) and an in-memory PGlite. Each entry opens its database with migrations applied.
 */
export function bothDatabases(prefix: string): Array<[string, () => Promise<{ db: Database; done(): Promise<void> }>]> {
  return [
    [
      'PostgreSQL',
      async () => {
        const t = await createTestDatabase(prefix);
        const db = await openDatabase({ databaseUrl: t.url, dataDir: MEMORY_DATA_DIR });
        return { db, done: async () => (await db.close(), await t.drop()) };
      },
    ],
    [
      'PGlite',
      async () => {
        const db = await openDatabase({ dataDir: MEMORY_DATA_DIR });
        return { db, done: () => db.close() };
      },
    ],
  ];
}
