import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { openDatabase, type Database } from '../../src/persistence/database.js';
import { startSmtpServer } from '../support/smtp.js';
import { runAdminCli } from '../support/admin-cli.js';

describe('admin CLI (spawned as an operator would)', () => {
  let testDb: TestDatabase;
  let db: Database;
  let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
  beforeAll(async () => {
    testDb = await createTestDatabase('cli');
    db = await openDatabase({ databaseUrl: testDb.url, dataDir: '/tmp' });
    smtp = await startSmtpServer();
  });
  afterAll(async () => {
    await db?.close();
    await testDb?.drop();
    await smtp?.close();
  });

  const admin = (...args: string[]) => runAdminCli({ DATABASE_URL: testDb.url, TENANTS_FILE: 'config/tenants.yaml', SMTP_URL: smtp.url }, args);
  const json = async (...args: string[]) => {
    const r = await admin(...args, '--json');
    if (r.code !== 0) throw new Error(`${args.join(' ')} exited ${r.code}: ${r.err}`);
    return JSON.parse(r.out) as Record<string, unknown>;
  };

  test('--help, tenants and clients from config', async () => {
    const help = await admin('--help');
    expect(help.code).toBe(0);
    for (const c of ['create', 'list', 'show', 'update', 'activation', 'unlock', 'delete', 'events', 'clients']) expect(help.out).toContain(`  ${c}`);
    const tenants = JSON.parse((await admin('tenants', '--json')).out) as Array<{ id: string; clients: Array<{ client_id: string }> }>;
    expect(tenants[0]!.id).toBe('demo');
    expect(tenants[0]!.clients.map((c) => c.client_id)).toContain('demo-site');
    const clients = await admin('clients', 'demo');
    expect(clients.code).toBe(0);
    expect(clients.out).toMatch(/demo\tdemo-site\t/);
  });

  test('create, list, show, update, activation, unlock, events and delete', async () => {
    const created = await json('create', 'demo', 'cli-user', '--email', 'a@example.test', '--email', 'b@example.test', '--kind', 'smartphone');
    expect(created).toMatchObject({ userId: 'cli-user', status: 'pending_activation', devices: [{ email: 'a@example.test', kind: 'smartphone' }, { email: 'b@example.test' }] });
    const activation = created.activation as { url: string; otp: string };
    expect(activation.url).toMatch(/\/activation\/demo\?user=cli-user$/);
    expect(activation.otp).toMatch(/^\d{8}$/);
    // Creating it again is a conflict, with the reason on stderr.
    const again = await admin('create', 'demo', 'cli-user', '--email', 'a@example.test');
    expect(again.code).toBe(1);
    expect(again.err).toContain('account_exists');

    const listed = await json('list', 'demo', '--status', 'pending_activation');
    expect((listed.items as Array<{ userId: string }>).map((a) => a.userId)).toContain('cli-user');
    expect(listed.total).toBeGreaterThanOrEqual(1);

    const updated = await json('update', 'demo', 'cli-user', '--email', 'c@example.test');
    expect(updated.devices).toEqual([{ number: 1, email: 'c@example.test', kind: 'pc', verified: true }]);
    // The support console's staff role: given, then taken away.
    expect((await json('update', 'demo', 'cli-user', '--role', 'support')).role).toBe('support');
    expect((await json('update', 'demo', 'cli-user', '--role', 'none')).role).toBeNull();
    const badRole = await admin('update', 'demo', 'cli-user', '--role', 'root');
    expect(badRole.code).toBe(2);
    expect(badRole.err).toContain('--role');

    const sent = await json('activation', 'demo', 'cli-user', '--send');
    expect(sent).toMatchObject({ sent: true });
    expect(sent).not.toHaveProperty('otp');
    const mail = await smtp.waitFor((m) => m.to.includes('c@example.test') && m.text.includes('cli-user'));
    expect(mail.text).toContain('/activation/demo?user=cli-user');

    await db.prisma.account.updateMany({ where: { userId: 'cli-user' }, data: { lockedAt: new Date(), failedAttempts: 5 } });
    expect(await json('show', 'demo', 'cli-user')).toMatchObject({ status: 'locked', failedAttempts: 5 });
    const unlocked = await admin('unlock', 'demo', 'cli-user');
    expect(unlocked.code).toBe(0);
    expect(unlocked.out).toContain('unlocked demo/cli-user');
    expect(await db.prisma.account.findFirst({ where: { userId: 'cli-user' } })).toMatchObject({ lockedAt: null, failedAttempts: 0 });
    await smtp.waitFor((m) => m.to.includes('c@example.test') && /ロック解除|unlocked/.test(m.subject));
    const audit = await db.prisma.accountEvent.findMany({ where: { account: { userId: 'cli-user' } }, orderBy: { createdAt: 'asc' } });
    expect(audit.map((e) => [e.type, e.actor])).toEqual([
      ['created', 'admin'],
      ['activation_issued', 'admin'],
      ['updated', 'admin'],
      ['updated', 'admin'],
      ['updated', 'admin'],
      ['activation_issued', 'admin'],
      ['unlocked', 'admin'],
    ]);

    expect(await json('events', 'demo', 'cli-user')).toMatchObject({ items: [] });

    expect((await admin('delete', 'demo', 'cli-user')).code).toBe(2); // needs --yes
    expect(await json('delete', 'demo', 'cli-user', '--yes')).toMatchObject({ deleted: true });
    expect(await db.prisma.account.count({ where: { userId: 'cli-user' } })).toBe(0);
    expect(await db.prisma.device.count({ where: { email: 'c@example.test' } })).toBe(0);
  }, 180_000); // a dozen CLI processes, each starting tsx

  test('bad usage exits 2 with a message; a missing account or a contract breach exits 1', async () => {
    const unknownTenant = await admin('unlock', 'nope', 'someone');
    expect(unknownTenant.code).toBe(2);
    expect(unknownTenant.err).toContain('unknown tenant "nope"');
    expect((await admin('frobnicate', 'demo', 'x')).code).toBe(2);
    expect((await admin('list', 'demo', '--status', 'weird')).code).toBe(2);
    const missing = await admin('unlock', 'demo', 'nobody');
    expect(missing.code).toBe(1);
    expect(missing.err).toContain('account_not_found');
    const badEmail = await admin('create', 'demo', 'someone', '--email', 'not-an-address');
    expect(badEmail.code).toBe(1);
    expect(badEmail.err).toContain('e-mail address is not valid');
    // Addresses the mail layer would refuse later (several recipients, markup) are refused now.
    for (const address of ['a,b@x.io', '<img/src=x>@x.io']) {
      const refused = await admin('create', 'demo', 'someone', '--email', address);
      expect(refused.code).toBe(1);
      expect(refused.err).toContain('e-mail address is not valid');
    }
  });
});

describe('admin CLI on the embedded database', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'cli-embedded-'));
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  test('while another process holds the data folder it fails at once, saying what to do; afterwards it works', async () => {
    // This process stands for the running provider.
    const provider = await openDatabase({ dataDir });
    const create = ['create', 'demo', 'cli-embedded', '--email', 'e@example.test', '--json'];
    const busy = await runAdminCli({ DATA_DIR: dataDir, TENANTS_FILE: 'config/tenants.yaml' }, create);
    expect(busy.code).toBe(1);
    expect(busy.out).toBe('');
    expect(busy.err.trimEnd().split('\n')).toHaveLength(1);
    expect(busy.err).toContain(`pid ${process.pid}`);
    expect(busy.err).toMatch(/stop the provider/);
    expect(busy.err).toMatch(/management API/);
    expect(await provider.prisma.account.count({ where: { userId: 'cli-embedded' } })).toBe(0);
    await provider.close();

    const done = await runAdminCli({ DATA_DIR: dataDir, TENANTS_FILE: 'config/tenants.yaml' }, create);
    expect([done.code, done.err]).toEqual([0, '']);
    expect(JSON.parse(done.out)).toMatchObject({ userId: 'cli-embedded', activation: { otp: expect.stringMatching(/^\d{8}$/) } });
    // What the CLI wrote is there for the provider's next start.
    const reopened = await openDatabase({ dataDir });
    try {
      expect(await reopened.prisma.account.count({ where: { userId: 'cli-embedded' } })).toBe(1);
    } finally {
      await reopened.close();
    }
  });
});
