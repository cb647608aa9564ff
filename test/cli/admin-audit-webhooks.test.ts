// The admin CLI's audit trail (list, export) and webhooks (list, register, delete, test), spawned as an
// operator would run them against the database.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { openDatabase, type Database } from '../../src/persistence/database.js';
import { startSmtpServer } from '../support/smtp.js';
import { runAdminCli } from '../support/admin-cli.js';
import { TEST_TENANTS_YAML } from '../support/harness.js';

// Each test spawns the CLI some fifteen times (a few seconds each on a busy machine).
const SPAWNS_TIMEOUT = 180_000;

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('admin CLI: audit trail and webhooks', () => {
  let testDb: TestDatabase;
  let db: Database;
  let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
  let dir: string;
  beforeAll(async () => {
    testDb = await createTestDatabase('cli_hooks');
    db = await openDatabase({ databaseUrl: testDb.url, dataDir: '/tmp' });
    smtp = await startSmtpServer();
    dir = mkdtempSync(join(tmpdir(), 'cli-hooks-'));
    writeFileSync(join(dir, 'tenants.yaml'), TEST_TENANTS_YAML);
  });
  afterAll(async () => {
    await db?.close();
    await testDb?.drop();
    await smtp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const admin = (args: string[], env: Record<string, string> = {}) =>
    runAdminCli({ DATABASE_URL: testDb.url, TENANTS_FILE: join(dir, 'tenants.yaml'), SMTP_URL: smtp.url, ...env }, args);
  const json = async (args: string[], env: Record<string, string> = {}) => {
    const r = await admin([...args, '--json'], env);
    if (r.code !== 0) throw new Error(`${args.join(' ')} exited ${r.code}: ${r.err}`);
    return JSON.parse(r.out) as Json;
  };

  test('audit list and export: the trail of a tenant, filtered, newest first; export is JSON Lines', async () => {
    expect((await admin(['create', 't1', 'cli-aud-1', '--email', 'a1@example.test'])).code).toBe(0);
    expect((await admin(['unlock', 't1', 'cli-aud-1'])).code).toBe(0);
    expect((await admin(['create', 't1', 'cli-aud-2', '--email', 'a2@example.test'])).code).toBe(0);
    expect((await admin(['create', 't2', 'cli-aud-3', '--email', 'a3@example.test'])).code).toBe(0);

    const all = await json(['audit', 'list', 't1']);
    expect((all.items as Json[]).map((r) => [r.action, r.userId])).toEqual([
      ['account.created', 'cli-aud-2'],
      ['account.unlocked', 'cli-aud-1'],
      ['account.created', 'cli-aud-1'],
    ]);
    for (const r of all.items as Json[]) expect(r).toMatchObject({ tenant: 't1', actor: { kind: 'cli', id: expect.stringMatching(/^[^@\s]+@\S+$/) }, outcome: 'done' });
    const one = await json(['audit', 'list', 't1', '--user', 'cli-aud-1', '--action', 'account.unlocked']);
    expect((one.items as Json[]).map((r) => r.action)).toEqual(['account.unlocked']);
    // Pages: --per-page with the cursor the previous page printed.
    const first = await json(['audit', 'list', 't1', '--per-page', '2']);
    expect(first.items).toHaveLength(2);
    const second = await json(['audit', 'list', 't1', '--per-page', '2', '--cursor', first.nextCursor as string]);
    expect([...(first.items as Json[]), ...(second.items as Json[])]).toEqual(all.items);
    expect(second.nextCursor).toBeNull();

    const human = await admin(['audit', 'list', 't1']);
    expect(human.code).toBe(0);
    expect(human.out).toMatch(/^\S+Z\tcli:\S+\taccount\.created\tcli-aud-2\tdone$/m);

    const exported = await admin(['audit', 'export', 't1']);
    expect(exported.code).toBe(0);
    const lines = exported.out.trimEnd().split('\n').map((l) => JSON.parse(l) as Json);
    expect(lines).toEqual(all.items);
    expect(exported.out).not.toContain('cli-aud-3');

    expect((await admin(['audit', 'list', 't1', '--action', 'account.exploded'])).code).toBe(2);
    expect((await admin(['audit', 'list', 't1', '--since', 'yesterday'])).code).toBe(2);
    expect((await admin(['audit', 'frobnicate', 't1'])).code).toBe(2);
  }, SPAWNS_TIMEOUT);

  test('webhooks register (secret shown once), list, test (queued for the running provider) and delete', async () => {
    // Loopback receivers are refused unless the deployment allows them, as through the API.
    const refused = await admin(['webhooks', 'register', 't1', '--url', 'http://127.0.0.1:9/hook']);
    expect(refused.code).toBe(1);
    expect(refused.err).toContain('validation_failed');
    const allow = { WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true' };
    const hook = await json(['webhooks', 'register', 't1', '--url', 'http://127.0.0.1:9/hook', '--event', 'account.deleted', '--event', 'account.locked', '--description', 'support desk'], allow);
    expect(hook).toMatchObject({ url: 'http://127.0.0.1:9/hook', events: ['account.deleted', 'account.locked'], description: 'support desk', enabled: true });
    expect(hook.secret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    expect(await db.prisma.webhook.findUniqueOrThrow({ where: { id: hook.id as string } })).toMatchObject({ tenantId: 't1', createdBy: expect.stringMatching(/^cli:/) });
    expect((await admin(['webhooks', 'register', 't1', '--url', 'http://127.0.0.1:9/x', '--event', 'account.exploded'], allow)).code).toBe(2);

    const listed = await json(['webhooks', 'list', 't1']);
    expect((listed.items as Json[]).map((h) => h.id)).toEqual([hook.id]);
    expect(JSON.stringify(listed)).not.toContain(hook.secret as string);
    expect((await json(['webhooks', 'list', 't2'])).items).toEqual([]);
    const human = await admin(['webhooks', 'list', 't1']);
    expect(human.out).toContain(`${hook.id}\tenabled\thttp://127.0.0.1:9/hook\taccount.deleted,account.locked`);

    const queued = await json(['webhooks', 'test', 't1', hook.id as string]);
    expect(queued).toMatchObject({ deliveryId: expect.any(String), eventType: 'webhook.test' });
    expect(await db.prisma.webhookDelivery.findUniqueOrThrow({ where: { id: queued.deliveryId as string } })).toMatchObject({ webhookId: hook.id, status: 'pending', eventType: 'webhook.test' });
    // Another tenant's hook is not found.
    const other = await admin(['webhooks', 'test', 't2', hook.id as string]);
    expect(other.code).toBe(1);
    expect(other.err).toContain('webhook_not_found');

    expect((await admin(['webhooks', 'delete', 't1', hook.id as string])).code).toBe(2);
    expect((await admin(['webhooks', 'delete', 't2', hook.id as string, '--yes'])).code).toBe(1);
    const deleted = await admin(['webhooks', 'delete', 't1', hook.id as string, '--yes']);
    expect([deleted.code, deleted.out.trim()]).toEqual([0, `deleted webhook ${hook.id}`]);
    expect((await json(['webhooks', 'list', 't1'])).items).toEqual([]);
  }, SPAWNS_TIMEOUT);
});
