// Raw SQL on PostgreSQL runs as named prepared statements (src/persistence/sql.ts, preparedSql):
// each connection parses a statement once, and a table changed under a prepared statement by a
// migration does not break it.
import pg from 'pg';
import { preparedSql } from '../../src/persistence/sql.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

let t: TestDatabase;
let pool: pg.Pool;
/** Another session on the same database, to look at the pool's connection from outside. */
let observer: pg.Client;

beforeAll(async () => {
  t = await createTestDatabase('prepared_sql');
  // One connection: every statement runs on the same session, so what it has prepared is visible.
  pool = new pg.Pool({ connectionString: t.url, max: 1 });
  observer = new pg.Client({ connectionString: t.url });
  await observer.connect();
  await observer.query('CREATE TABLE gadgets (id int PRIMARY KEY, label int NOT NULL)');
  await observer.query('INSERT INTO gadgets VALUES (1, 10), (2, 20)');
});

afterAll(async () => {
  await observer?.end();
  await pool?.end();
  await t?.drop();
});

/** The statements the pool's one session has prepared, from pg_prepared_statements of that session. */
async function preparedOnPool(): Promise<string[]> {
  const client = await pool.connect();
  try {
    const { rows } = await client.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name');
    return rows.map((r) => r.name);
  } finally {
    client.release();
  }
}

it('prepares a statement once per connection and reuses it with other values', async () => {
  const sql = preparedSql(pool);
  const text = 'SELECT label FROM gadgets WHERE id = $1';
  expect(await sql.query<{ label: number }>(text, [1])).toEqual([{ label: 10 }]);
  expect(await sql.query<{ label: number }>(text, [2])).toEqual([{ label: 20 }]);
  const names = await preparedOnPool();
  expect(names.filter((n) => n.startsWith('anshin_'))).toHaveLength(1);
  // Twice prepared on one connection would have failed ("prepared statement … already exists").
  expect(await sql.query<{ label: number }>(text, [1])).toEqual([{ label: 10 }]);
});

it('keeps answering after a migration changes the result type under a prepared statement', async () => {
  const sql = preparedSql(pool);
  const text = 'SELECT label FROM gadgets WHERE id = $1 /* migrated */';
  expect(await sql.query<{ label: number }>(text, [1])).toEqual([{ label: 10 }]);
  // What another instance's migration might do during a rolling deploy.
  await observer.query('ALTER TABLE gadgets ALTER COLUMN label TYPE text');
  expect(await sql.query<{ label: string }>(text, [1])).toEqual([{ label: '10' }]);
  expect(await sql.query<{ label: string }>(text, [2])).toEqual([{ label: '20' }]);
  await observer.query('ALTER TABLE gadgets ALTER COLUMN label TYPE int USING label::int');
  expect(await sql.query<{ label: number }>(text, [2])).toEqual([{ label: 20 }]);
});

it('runs texts beyond its limit unnamed', async () => {
  const sql = preparedSql(pool, 1);
  const before = (await preparedOnPool()).length;
  expect(await sql.query<{ n: number }>('SELECT 1 AS n')).toEqual([{ n: 1 }]);
  expect(await sql.query<{ n: number }>('SELECT 2 AS n')).toEqual([{ n: 2 }]);
  expect(await preparedOnPool()).toHaveLength(before + 1);
});

it('reports an error of the statement itself as it is', async () => {
  const sql = preparedSql(pool);
  await expect(sql.query('SELECT label FROM gadgets WHERE id = $1::int', ['not a number'])).rejects.toMatchObject({ code: '22P02' });
  await expect(sql.query('SELECT nothing FROM gadgets')).rejects.toMatchObject({ code: '42703' });
  // The connection is still usable.
  expect(await sql.query<{ label: number }>('SELECT label FROM gadgets WHERE id = $1', [1])).toEqual([{ label: 10 }]);
});
