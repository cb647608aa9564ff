import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { AccountRepository } from '../../src/persistence/account.repository.js';
import { openDatabase, type Database } from '../../src/persistence/database.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startLogoutReceiver } from '../support/logout-receiver.js';
import { startSmtpServer } from '../support/smtp.js';
import { runAdminCli } from '../support/admin-cli.js';

describe('admin CLI: commands that change an account end its sessions and tell the sites', () => {
  let testDb: TestDatabase;
  let db: Database;
  let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
  let receiver: Awaited<ReturnType<typeof startLogoutReceiver>>;
  let dir: string;
  beforeAll(async () => {
    testDb = await createTestDatabase('clilife');
    db = await openDatabase({ databaseUrl: testDb.url, dataDir: '/tmp' });
    smtp = await startSmtpServer();
    receiver = await startLogoutReceiver();
    dir = mkdtempSync(join(tmpdir(), 'cli-life-'));
    // The shipped tenants, with a site of the demo tenant registered for back-channel logout.
    const yaml = readFileSync('config/tenants.yaml', 'utf8').replace(
      '      - client_id: demo-backoffice\n',
      `      - client_id: demo-bcl\n        client_secret: demo-bcl-secret-0123456789\n        name: 通知サイト\n        redirect_uris: [http://127.0.0.1/cb]\n        backchannel_logout_uri: ${receiver.uri}\n      - client_id: demo-backoffice\n`,
    );
    writeFileSync(join(dir, 'tenants.yaml'), yaml);
  });
  afterAll(async () => {
    await db?.close();
    await testDb?.drop();
    await smtp?.close();
    await receiver?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const admin = (...args: string[]) =>
    runAdminCli({ DATABASE_URL: testDb.url, TENANTS_FILE: join(dir, 'tenants.yaml'), DATA_DIR: dir, SMTP_URL: smtp.url }, [...args, '--json']);

  /** An active demo account signed in at demo-bcl: a session naming the sign-in's sid, its grant and token. */
  async function signedIn(userId: string) {
    const account = await new AccountRepository(db.prisma).create({ tenantId: 'demo', userId, devices: [{ email: `${userId}@example.test` }] });
    const sid = `sid-${userId}`;
    const grantId = `grant-${userId}`;
    const rows: Array<[string, string, Record<string, unknown>]> = [
      ['Session', `s-${userId}`, { uid: `u-${userId}`, accountId: account.id, loginTs: Math.floor(Date.now() / 1000), authorizations: { 'demo-bcl': { sid, grantId } } }],
      ['Grant', grantId, { accountId: account.id, clientId: 'demo-bcl' }],
      ['AccessToken', `at-${userId}`, { accountId: account.id, clientId: 'demo-bcl', grantId }],
    ];
    for (const [type, id, payload] of rows)
      await db.prisma.$executeRaw`INSERT INTO oidc_payloads (id, type, payload, grant_id, uid, expires_at)
        VALUES (${id}, ${type}, ${JSON.stringify(payload)}::jsonb, ${(payload.grantId as string | undefined) ?? null}, ${(payload.uid as string | undefined) ?? null}, now() + interval '1 hour')`;
    return { id: account.id, sid };
  }

  const payloadsOf = async (accountId: string) =>
    Number((await db.prisma.$queryRaw<Array<{ n: bigint }>>`SELECT count(*) AS n FROM oidc_payloads WHERE payload->>'accountId' = ${accountId}`)[0]!.n);

  test('update to a method without credentials: a fresh activation, sessions ended, the site told', async () => {
    const u = await signedIn('cli-life-update');
    expect(await payloadsOf(u.id)).toBe(3);
    const count = receiver.tokens.length;
    const r = await admin('update', 'demo', 'cli-life-update', '--method', 'password');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.out) as Record<string, unknown>;
    expect(out).toMatchObject({ loginMethod: 'password', status: 'pending_activation', activation: { otp: expect.stringMatching(/^\d{8}$/) } });
    expect(await payloadsOf(u.id)).toBe(0);
    expect(decodeJwt(await receiver.nth(count + 1))).toMatchObject({ sub: u.id, sid: u.sid, aud: 'demo-bcl' });
  });

  test('delete: the site is told of the ended session', async () => {
    const u = await signedIn('cli-life-delete');
    const count = receiver.tokens.length;
    expect((await admin('delete', 'demo', 'cli-life-delete', '--yes')).code).toBe(0);
    expect(await payloadsOf(u.id)).toBe(0);
    expect(decodeJwt(await receiver.nth(count + 1))).toMatchObject({ sub: u.id, sid: u.sid, aud: 'demo-bcl' });
  });
});
