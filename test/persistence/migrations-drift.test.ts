// Proves prisma/migrations and prisma/schema.prisma describe the same database: Prisma's schema engine
// (WebAssembly) replays the migrations on a scratch PGlite and diffs the result against the schema.
import { readFile } from 'node:fs/promises';
import { PGlite } from '@electric-sql/pglite';
import { DEFAULT_SCHEMA_PATH, diffMigrationsToSchema, readMigrationList, withSchemaEngine } from '../../scripts/migration-new.js';
import { applyMigrations, readMigrations, type SqlExecutor } from '../../src/persistence/migrate.js';

function pgliteExecutor(db: PGlite): SqlExecutor {
  return {
    kind: 'pglite',
    query: async <Row extends object>(sql: string, params: readonly unknown[] = []) => (await db.query<Row>(sql, [...params])).rows,
    exec: async (script: string) => void (await db.exec(script)),
  };
}

const noFilters = { externalTables: [], externalEnums: [] };

describe('migrations vs schema.prisma', () => {
  let schema: string;
  beforeAll(async () => {
    schema = await readFile(DEFAULT_SCHEMA_PATH, 'utf8');
  });

  test('the migrations produce exactly the schema', async () => {
    const missing = await diffMigrationsToSchema({ schema });
    if (missing) {
      throw new Error(
        'prisma/schema.prisma differs from prisma/migrations. Run `npx tsx scripts/migration-new.ts <name>` ' +
          `and commit the new migration. Missing SQL:\n${missing}`,
      );
    }
    expect(missing).toBe('');
  });

  // Guards the guard: an unmigrated field must be reported, or the test above proves nothing.
  test('a field added without a migration is detected', async () => {
    const changed = schema.replace(/(model Device \{\n)/, '$1  nickname String?\n');
    expect(changed).not.toBe(schema);
    const missing = await diffMigrationsToSchema({ schema: changed });
    expect(missing).toContain('ALTER TABLE "devices" ADD COLUMN     "nickname" TEXT;');
  });
});

// The same checks `prisma migrate deploy` makes, run by Prisma's own engine against our bookkeeping.
describe('_prisma_migrations is shared with Prisma Migrate', () => {
  let schema: string;
  let names: string[];
  let db: PGlite;
  beforeAll(async () => {
    schema = await readFile(DEFAULT_SCHEMA_PATH, 'utf8');
    names = (await readMigrations()).map((m) => m.name);
  });
  beforeEach(() => {
    db = new PGlite();
  });
  afterEach(async () => {
    await db.close();
  });

  test('Prisma sees our applied migrations as applied and unedited', async () => {
    expect((await applyMigrations(pgliteExecutor(db))).applied).toEqual(names);
    const migrationsList = await readMigrationList();
    await withSchemaEngine(db, schema, async (engine) => {
      const diagnosis = await engine.diagnoseMigrationHistory({ migrationsList, optInToShadowDatabase: false, filters: noFilters });
      expect(diagnosis).toMatchObject({ editedMigrationNames: [], failedMigrationNames: [], hasMigrationsTable: true, history: null });
      expect((await engine.applyMigrations({ migrationsList, filters: noFilters })).appliedMigrationNames).toEqual([]);
    });
  });

  test('we see migrations applied by Prisma as applied', async () => {
    const migrationsList = await readMigrationList();
    await withSchemaEngine(db, schema, async (engine) => {
      expect((await engine.applyMigrations({ migrationsList, filters: noFilters })).appliedMigrationNames).toEqual(names);
    });
    expect((await applyMigrations(pgliteExecutor(db))).applied).toEqual([]);
  });
});
