// The mail queue without Redis: the outbox table (PostgreSQL, and PGlite on disk), over a real SMTP server.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mailSealer } from '../../src/mail/mail.envelope.js';
import { createMailQueue, type MailQueueOptions } from '../../src/mail/mail.queue.js';
import { createMailSender } from '../../src/mail/mail.sender.js';
import { createMailTransport } from '../../src/mail/mail.transport.js';
import type { MailJob, MailQueue } from '../../src/mail/mail.types.js';
import { openDatabase, type Database } from '../../src/persistence/database.js';
import { claimedInsertSql, MailOutboxRepository, type ClaimedInsert } from '../../src/persistence/mail-outbox.repository.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { mailStore, SEAL_KEYS, waitUntil } from './mail-store.js';
import { captureLogger, startSmtpSink, type SmtpSink } from './smtp-sink.js';

const OTP = '73190428';
const otpJob = (locale: 'ja' | 'en', to = ['taro@example.jp'], extra: Partial<MailJob> = {}): MailJob => ({
  to,
  template: 'login-otp',
  locale,
  params: { userId: 'p-01-usr012', otp: OTP, expiresMinutes: '10', clientName: 'デモサイト' },
  ...extra,
});
const noDevMailbox = { mailFrom: '"Anshin Login" <no-reply@example.test>', devMailbox: false };
const parsed = (lines: string[]) => lines.map((l) => JSON.parse(l) as Record<string, unknown>);

describe('outbox mail queue (no Redis) over real SMTP', () => {
  let testDb: TestDatabase;
  let db: Database;
  let sink: SmtpSink | undefined;
  const queues: MailQueue[] = [];
  beforeAll(async () => {
    testDb = await createTestDatabase('outbox');
    db = await openDatabase({ databaseUrl: testDb.url, dataDir: '/tmp' });
  });
  afterAll(async () => {
    await db?.close();
    await testDb?.drop();
  });
  afterEach(async () => {
    for (const q of queues.splice(0)) await q.close();
    await sink?.close();
    sink = undefined;
    await db.prisma.mailMessage.deleteMany();
  });

  function queueFor(url: string, options: MailQueueOptions = {}) {
    const log = captureLogger();
    const sender = createMailSender({ config: noDevMailbox, transport: createMailTransport({ smtpUrl: url }), logger: log.logger });
    const queue = createMailQueue({ config: { redisUrl: undefined, mailWorker: 'inline' }, sender, logger: log.logger, store: mailStore(db), sealKeys: SEAL_KEYS, options: { outbox: { pollMs: 50 }, ...options } });
    queues.push(queue);
    return { queue, log };
  }

  async function setup(refuse?: (n: number) => number | undefined, options: MailQueueOptions = { retry: { backoffMs: 10 } }) {
    sink = await startSmtpSink({ refuse });
    return { sink, ...queueFor(sink.url, options) };
  }

  test.each([
    ['ja', '【あんしんログインサービス】ワンタイムパスワードのお知らせ', 'ワンタイムパスワード：'],
    ['en', '[Anshin Login Service] Your one-time password', 'One-time password: '],
  ] as const)('a %s OTP mail arrives with its subject, recipients and code', async (locale, subject, label) => {
    const { sink, queue, log } = await setup();
    await queue.enqueue(otpJob(locale, ['taro@example.jp', 'taro.mobile@example.jp']));
    const [mail] = await sink.waitFor(1);
    expect(mail?.subject).toBe(subject);
    expect(mail?.to).toEqual(['taro@example.jp', 'taro.mobile@example.jp']);
    expect(mail?.from).toBe('no-reply@example.test');
    expect(mail?.text).toContain(`${label}${OTP}`);
    expect(mail?.html).toContain(OTP);
    await queue.close();
    const sent = parsed(log.lines).find((l) => l.msg === 'mail sent');
    expect(sent).toMatchObject({ template: 'login-otp', locale, to: ['taro@example.jp', 'taro.mobile@example.jp'] });
    expect(log.output()).not.toContain(OTP);
    const [row] = await db.prisma.mailMessage.findMany();
    expect(row).toMatchObject({ status: 'sent', payload: null, attempts: 1, recipients: 2, maskedTo: 'ta***@example.jp,ta***@example.jp' });
  });

  test('text and HTML parts travel in base64 (Japanese in quoted-printable is three times its size)', async () => {
    const { sink, queue } = await setup();
    await queue.enqueue(otpJob('ja'));
    const [mail] = await sink.waitFor(1);
    const encodings = [...mail!.raw.matchAll(/^Content-Transfer-Encoding: (.+)$/gim)].map((m) => m[1]!.trim().toLowerCase());
    expect(encodings).toEqual(['base64', 'base64']);
    expect(mail!.raw).toMatch(/^Content-Type: text\/plain; charset=utf-8$/im);
    expect(mail!.text).toContain(`ワンタイムパスワード：${OTP}`);
    expect(mail!.html).toContain(OTP);
  });

  test('consecutive messages travel over one pooled SMTP connection, closed with the queue', async () => {
    const { sink, queue } = await setup();
    for (let i = 1; i <= 4; i++) {
      await queue.enqueue(otpJob('ja', [`user${i}@example.jp`]));
      await sink.waitFor(i);
    }
    expect(sink.connections).toBe(1);
    await queue.close();
    // The pooled connection is ended by the client: the server has no connection left to wait for.
    await waitUntil(() => sink.openConnections() === 0, 'the pooled connection closed');
  });

  test('after the SMTP server restarts, the pool connects again: the next message goes out at its first attempt', async () => {
    const first = await startSmtpSink();
    const { queue, log } = queueFor(first.url);
    await queue.enqueue(otpJob('ja', ['before@example.jp']));
    await first.waitFor(1);
    // The server goes away (ending the pooled connection) and comes back on the same port.
    await first.close();
    sink = await startSmtpSink({ port: Number(new URL(first.url).port) });
    await queue.enqueue(otpJob('ja', ['after@example.jp']));
    const [mail] = await sink.waitFor(1);
    expect(mail?.to).toEqual(['after@example.jp']);
    const rows = await waitUntil(async () => {
      const all = await db.prisma.mailMessage.findMany({ orderBy: { createdAt: 'asc' } });
      return all.every((r) => r.status === 'sent') && all.length === 2 ? all : undefined;
    }, 'both rows marked sent');
    expect(rows.map((r) => r.attempts)).toEqual([1, 1]);
    expect(log.output()).not.toContain('will retry');
  });

  test('closing while a message is being queued waits for it and delivers it', async () => {
    const { sink, queue, log } = await setup();
    const queued = queue.enqueue(otpJob('ja'));
    await queue.close();
    await queued;
    expect(sink.received).toHaveLength(1);
    expect(await db.prisma.mailMessage.findFirst()).toMatchObject({ status: 'sent' });
    expect(log.output()).not.toContain('failed');
  });

  test('a queued message holds neither the code nor the addresses readable, and loses its payload once sent', async () => {
    const { sink, queue } = await setup((n) => (n <= 1 ? 451 : undefined), { retry: { backoffMs: 300 } });
    await queue.enqueue(otpJob('ja'));
    const waiting = await waitUntil(async () => (await db.prisma.mailMessage.findFirst({ where: { attempts: 1, status: 'pending', lastError: { not: null } } })), 'the first refusal');
    expect(waiting.payload).toBeTruthy();
    const atRest = JSON.stringify(await db.prisma.$queryRawUnsafe('SELECT * FROM mail_outbox'));
    expect(atRest).not.toContain(OTP);
    expect(atRest).not.toContain('taro@example.jp');
    await sink.waitFor(1);
    await waitUntil(async () => (await db.prisma.mailMessage.findFirst({ where: { status: 'sent' } })), 'the row marked sent');
    expect(await db.prisma.mailMessage.findFirst()).toMatchObject({ payload: null, attempts: 2 });
  });

  test('temporary refusals are retried with exponential backoff until the mail goes through', async () => {
    const { sink, queue, log } = await setup((n) => (n <= 2 ? 451 : undefined), { retry: { backoffMs: 40 } });
    const started = Date.now();
    await queue.enqueue(otpJob('ja'));
    await sink.waitFor(1);
    // Waits of 40 and 80 ms after the two refusals.
    expect(Date.now() - started).toBeGreaterThanOrEqual(120);
    expect(sink.refusals).toBe(2);
    const warnings = parsed(log.lines).filter((l) => l.msg === 'mail delivery failed; will retry');
    expect(warnings.map((w) => [w.attempt, w.retryInMs])).toEqual([
      [1, 40],
      [2, 80],
    ]);
    expect(log.output()).not.toContain(OTP);
  });

  test('the backoff is capped, and a code mail is tried until its deliverBy, then given up and its code marked', async () => {
    const { sink, queue, log } = await setup(() => 421, { retry: { backoffMs: 10, codeMaxDelayMs: 40 } });
    const otp = await db.prisma.oneTimePassword.create({ data: { purpose: 'login', codeHmac: 'x', expiresAt: new Date(Date.now() + 60_000) } });
    await queue.enqueue(otpJob('en', ['taro@example.jp'], { deliverBy: new Date(Date.now() + 2500), otpId: otp.id, tenantId: 't1' }));
    await waitUntil(() => log.output().includes('giving up'), 'giving up');
    const attempts = parsed(log.lines).filter((l) => l.msg === 'mail delivery failed; will retry');
    // 10, 20, 40, 40, ...: more tries than the five of a fixed budget, none after deliverBy.
    expect(attempts.length).toBeGreaterThan(5);
    expect(new Set(attempts.slice(3).map((a) => a.retryInMs))).toEqual(new Set([40]));
    expect(sink.received).toHaveLength(0);
    const row = await waitUntil(() => db.prisma.mailMessage.findFirst({ where: { status: 'failed' } }), 'the row marked failed');
    expect(row).toMatchObject({ payload: null, tenantId: 't1', otpId: otp.id });
    // The last error is the server's refusal, or (when the last retry fell due after the deliverBy, as
    // on a loaded machine) the deliverBy itself; the refusals before it are the "will retry" lines above.
    expect(row.lastError).toMatch(/421|try again|deliverBy/);
    expect(row.failedAt!.getTime()).toBeGreaterThanOrEqual(row.deliverBy.getTime() - 100);
    await waitUntil(async () => (await db.prisma.oneTimePassword.findUnique({ where: { id: otp.id } }))?.deliveryFailedAt, 'the code marked undelivered');
    // Operators see it, without content.
    const listed = await queue.undelivered({ tenantId: 't1' });
    expect(listed).toEqual([expect.objectContaining({ status: 'failed', template: 'login-otp', recipients: 1, maskedTo: ['ta***@example.jp'], source: 'outbox' })]);
    expect(await queue.undelivered({ tenantId: 't2' })).toEqual([]);
    expect(log.output()).not.toContain(OTP);
  });

  test('a notice is worth a day by default; a code the OTP TTL', async () => {
    const { queue } = await setup(() => 451, { retry: { backoffMs: 60_000, codeTtlMs: 120_000 } });
    const before = Date.now();
    await queue.enqueue({ to: ['a@example.jp'], template: 'account-locked', locale: 'ja', params: { userId: 'u', clientName: 'c' } });
    await queue.enqueue(otpJob('ja'));
    const rows = await db.prisma.mailMessage.findMany();
    const by = Object.fromEntries(rows.map((r) => [r.template, r.deliverBy.getTime() - before]));
    expect(by['account-locked']).toBeGreaterThanOrEqual(24 * 3_600_000);
    expect(by['account-locked']).toBeLessThan(24 * 3_600_000 + 10_000);
    expect(by['login-otp']).toBeGreaterThanOrEqual(120_000);
    expect(by['login-otp']).toBeLessThan(130_000);
  });

  test('a permanent (5xx) refusal is not retried', async () => {
    const { sink, queue, log } = await setup(() => 550, { retry: { backoffMs: 5 } });
    await queue.enqueue(otpJob('ja'));
    await waitUntil(() => db.prisma.mailMessage.findFirst({ where: { status: 'failed' } }), 'the row marked failed');
    await queue.close();
    expect(sink.refusals).toBe(1);
    expect(log.output()).toContain('giving up');
  });

  test('an unreachable SMTP server fails the attempts without crashing anything; the message stays queued', async () => {
    const { queue, log } = queueFor('smtp://127.0.0.1:1', { retry: { backoffMs: 5 } });
    await queue.enqueue(otpJob('ja'));
    await waitUntil(() => log.output().includes('will retry'), 'a failed attempt');
    await queue.close();
    expect(await db.prisma.mailMessage.findFirst()).toMatchObject({ status: 'pending' });
    expect(log.output()).not.toContain(OTP);
  });

  test('an invalid job is refused at enqueue, and a closed queue takes no jobs', async () => {
    const { queue } = await setup();
    await expect(queue.enqueue({ ...otpJob('ja'), to: [] })).rejects.toThrow(/invalid mail job: to/);
    await expect(queue.enqueue({ ...otpJob('ja'), template: 'nope' as MailJob['template'] })).rejects.toThrow(/template/);
    await queue.close();
    await expect(queue.enqueue(otpJob('ja'))).rejects.toThrow(/closed/);
  });

  test('close() gives the messages this process queued their try (a short-lived CLI mails too)', async () => {
    const { sink, queue } = await setup(undefined, { outbox: { pollMs: 60_000 } });
    for (let i = 0; i < 12; i++) await queue.enqueue(otpJob(i % 2 ? 'ja' : 'en', [`user${i}@example.jp`]));
    await queue.close();
    expect(sink.received).toHaveLength(12);
    expect(new Set(sink.received.flatMap((m) => m.to)).size).toBe(12);
  });

  test('a burst beyond the delivery slots is leased at once by the instance that queued it, kept while it waits, and sent once', async () => {
    let release!: () => void;
    sink = await startSmtpSink({ holdUntil: new Promise<void>((resolve) => (release = resolve)) });
    const leaseMs = 300;
    const { queue } = queueFor(sink.url, { outbox: { pollMs: 60_000, leaseMs } });
    // Another instance on the same database, looking for due rows all the time.
    queueFor(sink.url, { outbox: { pollMs: 20, leaseMs } });
    // Five delivery slots (the default): three of the eight messages wait.
    for (let i = 0; i < 8; i++) await queue.enqueue(otpJob('ja', [`burst${i}@example.jp`]));
    const rows = await db.prisma.mailMessage.findMany();
    expect(rows).toHaveLength(8);
    // Each row was inserted already leased to the queueing instance (no second statement to claim it).
    expect(rows.every((r) => r.leaseToken !== null && r.lockedUntil !== null && r.attempts === 1)).toBe(true);
    const token = rows[0]!.leaseToken;
    expect(rows.every((r) => r.leaseToken === token)).toBe(true);
    // Five deliveries hang at the server; the waiting rows' leases are renewed past their first term…
    const firstTerm = Math.max(...rows.map((r) => r.lockedUntil!.getTime()));
    await waitUntil(async () => {
      const now = await db.prisma.mailMessage.findMany();
      return now.every((r) => r.lockedUntil !== null && r.lockedUntil.getTime() > firstTerm + leaseMs / 3) ? now : undefined;
    }, 'every lease renewed');
    // …so the other instance took none of them.
    expect((await db.prisma.mailMessage.findMany()).every((r) => r.leaseToken === token && r.attempts === 1)).toBe(true);
    release();
    await sink.waitFor(8);
    await waitUntil(async () => ((await db.prisma.mailMessage.count({ where: { status: 'sent' } })) === 8 ? true : undefined), 'all eight marked sent');
    await queue.close();
    expect(sink.received).toHaveLength(8);
    expect(new Set(sink.received.flatMap((m) => m.to)).size).toBe(8);
  });

  test('queued mail survives a restart: a new queue on the same database delivers it', async () => {
    const down = queueFor('smtp://127.0.0.1:1', { retry: { backoffMs: 50 } });
    await down.queue.enqueue(otpJob('ja', ['restart@example.jp']));
    await down.queue.close();
    expect(await db.prisma.mailMessage.findFirst()).toMatchObject({ status: 'pending' });
    sink = await startSmtpSink();
    queueFor(sink.url);
    const [mail] = await sink.waitFor(1);
    expect(mail?.to).toEqual(['restart@example.jp']);
    expect(mail?.text).toContain(OTP);
  });

  test('a message taken by an instance that died is delivered by another once the lease runs out, once', async () => {
    sink = await startSmtpSink();
    const repo = new MailOutboxRepository(db.prisma);
    const envelope = mailSealer(SEAL_KEYS).seal(otpJob('en', ['lease@example.jp']), new Date(Date.now() + 60_000));
    await repo.add({ ...envelope, deliverBy: new Date(envelope.deliverBy) });
    // The "dead" instance: takes the row and never reports back.
    const taken = await repo.claimDue({ limit: 10, leaseMs: 600, token: 'dead-instance' });
    expect(taken).toHaveLength(1);
    const started = Date.now();
    queueFor(sink.url, { outbox: { pollMs: 50, leaseMs: 600 } });
    queueFor(sink.url, { outbox: { pollMs: 50, leaseMs: 600 } });
    await sink.waitFor(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
    await waitUntil(() => db.prisma.mailMessage.findFirst({ where: { status: 'sent' } }), 'the row marked sent');
    expect(sink.received).toHaveLength(1);
  });

  /** Stores a staged message as a login code's statement does: its row inside another statement. */
  async function storeStaged(row: ClaimedInsert): Promise<void> {
    const params: unknown[] = [];
    await db.sql.query(`WITH mail AS (${claimedInsertSql(params, row)}) SELECT 1`, params);
  }

  test('a staged message goes out once the statement that stores it has run, leased to its instance', async () => {
    sink = await startSmtpSink();
    const { queue } = queueFor(sink.url, { outbox: { pollMs: 60_000 } });
    const staged = queue.stage!(otpJob('ja', ['staged@example.jp']));
    expect(staged).toBeDefined();
    await storeStaged(staged!.row);
    const [row] = await db.prisma.mailMessage.findMany();
    expect(row).toMatchObject({ status: 'pending', attempts: 1, recipients: 1 });
    expect(row!.leaseToken).not.toBeNull();
    staged!.stored();
    const [mail] = await sink.waitFor(1);
    expect(mail?.to).toEqual(['staged@example.jp']);
    await waitUntil(() => db.prisma.mailMessage.findFirst({ where: { status: 'sent' } }), 'the row marked sent');
    // Invalid jobs are refused as enqueue refuses them; a closing queue stages nothing (enqueue then refuses).
    expect(() => queue.stage!({ ...otpJob('ja'), to: ['not an address'] })).toThrow();
    await queue.close();
    expect(queue.stage!(otpJob('ja'))).toBeUndefined();
  });

  test('a staged message whose instance died before starting it is delivered by another once the lease runs out, once', async () => {
    sink = await startSmtpSink();
    // The "dying" instance stages and stores the row, and never calls stored().
    const { queue: dying } = queueFor(sink.url, { outbox: { pollMs: 60_000, leaseMs: 600 } });
    const staged = dying.stage!(otpJob('en', ['orphan@example.jp']));
    await storeStaged(staged!.row);
    const started = Date.now();
    queueFor(sink.url, { outbox: { pollMs: 50, leaseMs: 600 } });
    const [mail] = await sink.waitFor(1);
    expect(mail?.to).toEqual(['orphan@example.jp']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
    await waitUntil(() => db.prisma.mailMessage.findFirst({ where: { status: 'sent' } }), 'the row marked sent');
    expect(sink.received).toHaveLength(1);
  });

  test('two instances on one database deliver every message exactly once', async () => {
    sink = await startSmtpSink();
    const a = queueFor(sink.url);
    const b = queueFor(sink.url);
    for (let i = 0; i < 30; i++) await (i % 2 ? a : b).queue.enqueue(otpJob('ja', [`twice${i}@example.jp`]));
    await sink.waitFor(30);
    await a.queue.close();
    await b.queue.close();
    expect(sink.received).toHaveLength(30);
    expect(new Set(sink.received.flatMap((m) => m.to)).size).toBe(30);
  });
});

test('the outbox works on the embedded PGlite and survives closing and reopening it', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'outbox-pglite-'));
  const sink = await startSmtpSink();
  try {
    const log = captureLogger();
    const queueOn = (db: Database, url: string) =>
      createMailQueue({
        config: { redisUrl: undefined, mailWorker: 'inline' },
        sender: createMailSender({ config: noDevMailbox, transport: createMailTransport({ smtpUrl: url }), logger: log.logger }),
        logger: log.logger,
        store: mailStore(db),
        sealKeys: SEAL_KEYS,
        options: { retry: { backoffMs: 20 }, outbox: { pollMs: 50 } },
      });
    const first = await openDatabase({ dataDir });
    const down = queueOn(first, 'smtp://127.0.0.1:1');
    await down.enqueue(otpJob('ja', ['pglite@example.jp']));
    await down.close();
    await first.close();

    const second = await openDatabase({ dataDir });
    const up = queueOn(second, sink.url);
    const [mail] = await sink.waitFor(1);
    expect(mail?.to).toEqual(['pglite@example.jp']);
    await waitUntil(() => second.prisma.mailMessage.findFirst({ where: { status: 'sent' } }), 'the row marked sent');
    await up.close();
    await second.close();
  } finally {
    await sink.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}, 30_000);

describe('mail without SMTP_URL', () => {
  test('is composed, logged without its body and dropped when there is no dev mailbox either', async () => {
    const log = captureLogger();
    const transport = createMailTransport({ smtpUrl: undefined });
    expect(transport.delivers).toBe(false);
    const sender = createMailSender({ config: noDevMailbox, transport, logger: log.logger });
    await sender.send(otpJob('ja'));
    expect(log.output()).toContain('mail dropped');
    expect(log.output()).not.toContain(OTP);
  });

  test('the sender insists on a repository when the dev mailbox is on', () => {
    expect(() =>
      createMailSender({ config: { ...noDevMailbox, devMailbox: true }, transport: createMailTransport({ smtpUrl: undefined }), logger: captureLogger().logger }),
    ).toThrow(/dev-mail repository/);
  });
});
