import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataDirLockedError, LOCK_FILE, processIdentity } from '../../src/persistence/data-dir-lock.js';
import { openDatabase, MEMORY_DATA_DIR, type Database } from '../../src/persistence/database.js';
import { readMigrations, type LocalMigration } from '../../src/persistence/migrate.js';
import { DeviceKind } from '../../src/persistence/prisma.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

interface HistoryRow {
  id: string;
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
  applied_steps_count: number;
  logs: string | null;
}

function recordingLogger() {
  const entries: { o: object; msg?: string }[] = [];
  return { entries, info: (o: object, msg?: string) => void entries.push({ o, msg }) };
}

async function history(db: Database): Promise<HistoryRow[]> {
  return db.prisma.$queryRawUnsafe<HistoryRow[]>(
    'SELECT id, migration_name, checksum, finished_at, rolled_back_at, applied_steps_count, logs FROM "_prisma_migrations" ORDER BY migration_name',
  );
}

function expectFullHistory(rows: HistoryRow[], migrations: LocalMigration[]): void {
  expect(rows.map((r) => r.migration_name)).toEqual(migrations.map((m) => m.name));
  for (const [i, m] of migrations.entries()) {
    const row = rows[i]!;
    expect(row.checksum).toBe(m.checksum);
    expect(row.checksum).toMatch(/^[0-9a-f]{64}$/);
    expect(row.finished_at).toBeInstanceOf(Date);
    expect(row.rolled_back_at).toBeNull();
    expect(Number(row.applied_steps_count)).toBe(1);
    expect(row.id).toMatch(/^[0-9a-f-]{36}$/);
  }
}

async function createAccountWithDevice(db: Database): Promise<void> {
  const account = await db.prisma.account.create({
    data: {
      tenantId: 'tenant-a',
      userId: 'p-01-usr012',
      devices: { create: [{ number: 1, email: 'user@example.test', kind: DeviceKind.smartphone }] },
    },
  });
  const found = await db.prisma.account.findUniqueOrThrow({
    where: { tenantId_userId: { tenantId: 'tenant-a', userId: 'p-01-usr012' } },
    include: { devices: true },
  });
  expect(found.id).toBe(account.id);
  expect(found.status).toBe('active');
  expect(found.loginMethod).toBe('otp');
  expect(found.failedAttempts).toBe(0);
  expect(found.devices).toHaveLength(1);
  expect(found.devices[0]).toMatchObject({ number: 1, email: 'user@example.test', kind: 'smartphone', accountId: account.id });
  const flow = await db.prisma.loginFlow.create({
    data: { interactionUid: 'uid-1', tenantId: 'tenant-a', clientId: 'c1', expiresAt: new Date(Date.now() + 60_000) },
  });
  expect(flow.completedFactors).toEqual([]);
}

let migrations: LocalMigration[];
beforeAll(async () => {
  migrations = await readMigrations();
  expect(migrations.length).toBeGreaterThan(0);
});

describe('openDatabase on PostgreSQL', () => {
  let testDb: TestDatabase;
  beforeEach(async () => {
    testDb = await createTestDatabase('persistence');
  });
  afterEach(async () => {
    await testDb.drop();
  });

  test('applies the migrations once, records them like Prisma, and refuses an edited migration', async () => {
    const log = recordingLogger();
    const db = await openDatabase({ databaseUrl: testDb.url, dataDir: MEMORY_DATA_DIR, logger: log });
    expect(db.kind).toBe('postgres');
    const first = await history(db);
    expectFullHistory(first, migrations);
    expect(log.entries.filter((e) => e.msg === 'migration applied')).toHaveLength(migrations.length);
    await createAccountWithDevice(db);
    await db.close();

    const log2 = recordingLogger();
    const again = await openDatabase({ databaseUrl: testDb.url, dataDir: MEMORY_DATA_DIR, logger: log2 });
    expect(await history(again)).toEqual(first);
    expect(log2.entries.filter((e) => e.msg === 'migration applied')).toHaveLength(0);
    expect(await again.prisma.device.count()).toBe(1);
    await again.prisma.$executeRawUnsafe(`UPDATE "_prisma_migrations" SET checksum = repeat('0', 64) WHERE migration_name = $1`, migrations[0]!.name);
    await again.close();

    await expect(openDatabase({ databaseUrl: testDb.url, dataDir: MEMORY_DATA_DIR })).rejects.toThrow(/modified after they were applied/);
  });

  test('instances starting at once apply one set of migrations', async () => {
    const opened = await Promise.allSettled(
      [1, 2, 3].map(() => openDatabase({ databaseUrl: testDb.url, dataDir: MEMORY_DATA_DIR })),
    );
    const dbs = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    try {
      expect(opened.filter((r) => r.status === 'rejected')).toEqual([]);
      const [a, b] = dbs as [Database, Database];
      expectFullHistory(await history(a), migrations);
      await createAccountWithDevice(b);
      expect(await a.prisma.account.count()).toBe(1);
    } finally {
      await Promise.all(dbs.map((db) => db.close()));
    }
  });
});

describe('openDatabase on PGlite', () => {
  test('in memory: migrations apply and the model works', async () => {
    const db = await openDatabase({ dataDir: MEMORY_DATA_DIR });
    try {
      expect(db.kind).toBe('pglite');
      expectFullHistory(await history(db), migrations);
      await createAccountWithDevice(db);
    } finally {
      await db.close();
    }
  });

  describe('on disk', () => {
    let dataDir: string;
    beforeEach(async () => {
      dataDir = await mkdtemp(join(tmpdir(), 'persistence-'));
    });
    afterEach(async () => {
      await rm(dataDir, { recursive: true, force: true });
    });

    test('keeps data under <dataDir>/pglite, reopens without migrating, and refuses an edited migration', async () => {
      const nested = join(dataDir, 'not', 'yet', 'there');
      const db = await openDatabase({ dataDir: nested });
      expect(existsSync(join(nested, 'pglite', 'PG_VERSION'))).toBe(true);
      const first = await history(db);
      expectFullHistory(first, migrations);
      await createAccountWithDevice(db);
      await db.close();

      const log = recordingLogger();
      const again = await openDatabase({ dataDir: nested, logger: log });
      expect(await history(again)).toEqual(first);
      expect(log.entries.filter((e) => e.msg === 'migration applied')).toHaveLength(0);
      expect(await again.prisma.device.count()).toBe(1);
      await again.prisma.$executeRawUnsafe(`UPDATE "_prisma_migrations" SET checksum = repeat('0', 64) WHERE migration_name = $1`, migrations[0]!.name);
      await again.close();

      await expect(openDatabase({ dataDir: nested })).rejects.toThrow(/modified after they were applied/);
    });

    test('one process at a time: a live holder is refused at once, a dead or reused pid is taken over', async () => {
      const lockFile = join(dataDir, LOCK_FILE);
      const db = await openDatabase({ dataDir });
      await expect(openDatabase({ dataDir })).rejects.toBeInstanceOf(DataDirLockedError);
      // Another live process holding it (its real identity): refused, and its lock stays.
      await db.close();
      expect(existsSync(lockFile)).toBe(false);
      const parent = { pid: process.ppid, ...processIdentity(process.ppid), since: new Date().toISOString() };
      await writeFile(lockFile, JSON.stringify(parent));
      await expect(openDatabase({ dataDir })).rejects.toThrow(`pid ${process.ppid}`);
      expect(JSON.parse(await readFile(lockFile, 'utf8'))).toEqual(parent);

      // Left behind by a process that is gone, by a pid now used by another process, or half written.
      const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
      const stale = [
        { pid: Number(gone.stdout), since: '2026-01-01T00:00:00.000Z' },
        { ...parent, startTicks: '1' },
        '{"pid":',
      ];
      for (const holder of stale) {
        await writeFile(lockFile, typeof holder === 'string' ? holder : JSON.stringify(holder));
        const taken = await openDatabase({ dataDir });
        expect(JSON.parse(await readFile(lockFile, 'utf8'))).toMatchObject({ pid: process.pid });
        await taken.close();
        expect(existsSync(lockFile)).toBe(false);
      }
    });
  });
});
