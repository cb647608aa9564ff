// Which real errors count as "the database cannot answer now" (503, try again) and which stay what
// they are (a bug or a conflict, never hidden as an outage).
import pg from 'pg';
import { isDatabaseUnavailable } from '../../src/persistence/database-unavailable.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { freePort } from '../support/relying-party.js';

describe('isDatabaseUnavailable', () => {
  let db: TestDatabase;
  let client: pg.Client;
  beforeAll(async () => {
    db = await createTestDatabase('unavailable');
    client = new pg.Client({ connectionString: db.url });
    await client.connect();
  });
  afterAll(async () => {
    await client?.end();
    await db?.drop();
  });

  const errorOf = (p: Promise<unknown>) => p.then(() => new Error('no error'), (e: unknown) => e);

  test('a refused connection, a statement past query_timeout, a terminated session: unavailable', async () => {
    const refused = await errorOf(new pg.Client({ host: '127.0.0.1', port: await freePort(), user: 'postgres', database: 'postgres' }).connect());
    expect(isDatabaseUnavailable(refused)).toBe(true);

    const slow = new pg.Client({ connectionString: db.url, query_timeout: 100 });
    await slow.connect();
    try {
      expect(isDatabaseUnavailable(await errorOf(slow.query('SELECT pg_sleep(2)')))).toBe(true);
    } finally {
      await slow.end().catch(() => undefined);
    }

    const victim = new pg.Client({ connectionString: db.url });
    victim.on('error', () => undefined);
    await victim.connect();
    const pid = (await victim.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const sleeping = errorOf(victim.query('SELECT pg_sleep(5)'));
    await client.query('SELECT pg_terminate_backend($1)', [pid]);
    expect(isDatabaseUnavailable(await sleeping)).toBe(true);
  });

  test('a conflict, a syntax error, an application error: not unavailable', async () => {
    await client.query('CREATE TABLE u (k text PRIMARY KEY)');
    await client.query(`INSERT INTO u VALUES ('a')`);
    expect(isDatabaseUnavailable(await errorOf(client.query(`INSERT INTO u VALUES ('a')`)))).toBe(false);
    expect(isDatabaseUnavailable(await errorOf(client.query('SELEC 1')))).toBe(false);
    expect(isDatabaseUnavailable(new Error('the request timed out upstream'))).toBe(false);
    expect(isDatabaseUnavailable(undefined)).toBe(false);
    // The driver's error kept as the cause of another (Prisma and other wrappers).
    expect(isDatabaseUnavailable(new Error('wrapped', { cause: Object.assign(new Error('x'), { code: 'ECONNREFUSED' }) }))).toBe(true);
  });
});
