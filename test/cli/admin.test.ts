import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { openDatabase, type Database } from '../../src/persistence/database.js';

const require = createRequire(import.meta.url);
const tsxCli = require.resolve('tsx/cli');

describe('admin CLI (spawned as an operator would)', () => {
  let testDb: TestDatabase;
  let db: Database;
  beforeAll(async () => {
    testDb = await createTestDatabase('cli');
    db = await openDatabase({ databaseUrl: testDb.url, dataDir: '/tmp' });
  });
  afterAll(async () => {
    await db?.close();
    await testDb?.drop();
  });

  const admin = (...args: string[]) => {
    const r = spawnSync(process.execPath, [tsxCli, 'src/cli/admin.ts', ...args], {
      env: { ...process.env, DATABASE_URL: testDb.url, TENANTS_FILE: 'config/tenants.yaml', NODE_ENV: 'development', LOG_LEVEL: 'silent' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };

  test('--help, tenants, create-account, show --json, unlock', async () => {
    const help = admin('--help');
    expect(help.code).toBe(0);
    expect(help.out).toContain('unlock <tenant> <user-id>');

    const tenants = admin('tenants', '--json');
    expect(tenants.code).toBe(0);
    expect(JSON.parse(tenants.out)[0]).toMatchObject({ id: 'demo', clients: [{ client_id: 'demo-site' }] });

    const created = admin('create-account', 'demo', 'cli-user', '--email', 'a@example.test', '--email', 'b@example.test', '--json');
    expect(created.code).toBe(0);
    expect(JSON.parse(created.out)).toMatchObject({ tenant: 'demo', userId: 'cli-user', devices: ['a@example.test', 'b@example.test'] });
    expect(admin('create-account', 'demo', 'cli-user', '--email', 'a@example.test').code).toBe(1);

    await db.prisma.account.updateMany({ where: { userId: 'cli-user' }, data: { lockedAt: new Date(), failedAttempts: 5 } });
    const locked = JSON.parse(admin('show', 'demo', 'cli-user', '--json').out);
    expect(locked).toMatchObject({ locked: true, failedAttempts: 5 });

    const unlocked = admin('unlock', 'demo', 'cli-user');
    expect(unlocked.code).toBe(0);
    expect(unlocked.out).toContain('unlocked demo/cli-user');
    const after = await db.prisma.account.findFirst({ where: { userId: 'cli-user' } });
    expect(after).toMatchObject({ lockedAt: null, failedAttempts: 0 });
  });

  test('bad usage exits 2 with a message; a missing account exits 1', () => {
    const unknownTenant = admin('unlock', 'nope', 'someone');
    expect(unknownTenant.code).toBe(2);
    expect(unknownTenant.err).toContain('unknown tenant "nope"');
    expect(admin('frobnicate', 'demo', 'x').code).toBe(2);
    const missing = admin('unlock', 'demo', 'nobody');
    expect(missing.code).toBe(1);
    expect(missing.err).toContain('no account demo/nobody');
  });
});
