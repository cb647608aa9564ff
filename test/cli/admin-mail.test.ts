// `npm run admin -- mail undelivered`, spawned as an operator would, against mail the outbox gave up and mail still waiting.
import { createMailQueue } from '../../src/mail/mail.queue.js';
import { createMailSender } from '../../src/mail/mail.sender.js';
import { createMailTransport } from '../../src/mail/mail.transport.js';
import { openDatabase, type Database } from '../../src/persistence/database.js';
import { runAdminCli } from '../support/admin-cli.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { mailStore, SEAL_KEYS, waitUntil } from '../mail/mail-store.js';
import { captureLogger, startSmtpSink, type SmtpSink } from '../mail/smtp-sink.js';

const OTP = '48151623';

describe('admin CLI: mail undelivered', () => {
  let testDb: TestDatabase;
  let db: Database;
  let sink: SmtpSink;
  beforeAll(async () => {
    testDb = await createTestDatabase('climail');
    db = await openDatabase({ databaseUrl: testDb.url, dataDir: '/tmp' });
    sink = await startSmtpSink({ refuse: () => 550 });
  });
  afterAll(async () => {
    await db?.close();
    await testDb?.drop();
    await sink?.close();
  });

  const admin = (...args: string[]) =>
    runAdminCli({ DATABASE_URL: testDb.url, TENANTS_FILE: 'config/tenants.yaml', SMTP_URL: sink.url, COOKIE_KEYS: SEAL_KEYS[0]!, OTP_HMAC_KEY: 'k' }, args);

  test('lists a code mail the SMTP server refused for good and a notice still waiting, never their content', async () => {
    const log = captureLogger();
    const queue = createMailQueue({
      config: { redisUrl: undefined, mailWorker: 'inline' },
      sender: createMailSender({ config: { mailFrom: 'no-reply@example.test', devMailbox: false }, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger }),
      logger: log.logger,
      store: mailStore(db),
      sealKeys: SEAL_KEYS,
    });
    await queue.enqueue({ to: ['hanako@example.jp'], template: 'login-otp', locale: 'ja', params: { userId: 'u1', otp: OTP, expiresMinutes: '10', clientName: 'c' }, tenantId: 'demo' });
    await waitUntil(() => db.prisma.mailMessage.findFirst({ where: { status: 'failed' } }), 'the refused mail given up');
    await queue.close();
    // A notice queued by a provider that is not running now: pending and due.
    await db.prisma.mailMessage.create({ data: { template: 'account-locked', tenantId: 'demo', recipients: 2, maskedTo: 'ji***@example.jp,ji***@example.com', payload: 'sealed', deliverBy: new Date(Date.now() + 86_400_000), nextAttemptAt: new Date(), attempts: 3, lastError: 'connect ECONNREFUSED' } });

    const listed = await admin('mail', 'undelivered', '--tenant', 'demo', '--json');
    expect(listed.code).toBe(0);
    const { items } = JSON.parse(listed.out) as { items: Array<Record<string, unknown>> };
    expect(items).toEqual([
      expect.objectContaining({ status: 'pending', template: 'account-locked', recipients: 2, attempts: 3, lastError: 'connect ECONNREFUSED', maskedTo: ['ji***@example.jp', 'ji***@example.com'] }),
      expect.objectContaining({ status: 'failed', template: 'login-otp', recipients: 1, attempts: 1, maskedTo: ['ha***@example.jp'] }),
    ]);
    expect(String(items[1]!.lastError)).toMatch(/550|refused/);
    expect(listed.out).not.toContain(OTP);
    expect(listed.out).not.toContain('sealed');
    expect(listed.out).not.toContain('hanako@');
    // The listing took nothing of the provider's outbox.
    expect(sink.refusals).toBe(1);
    expect(await db.prisma.mailMessage.findFirst({ where: { template: 'account-locked' } })).toMatchObject({ status: 'pending', attempts: 3, payload: 'sealed' });

    const human = await admin('mail', 'undelivered');
    expect(human.code).toBe(0);
    expect(human.out).toMatch(/failed\tlogin-otp\tdemo\t1 \(ha\*\*\*@example\.jp\)\tage \d+s\tattempts 1\t/);
    expect(human.out).toMatch(/pending\taccount-locked\tdemo\t2 /);
    expect((await admin('mail', 'undelivered', '--tenant', 't-nope')).code).toBe(2);
    expect((await admin('mail', 'sent')).code).toBe(2);
  }, 60_000);
});
