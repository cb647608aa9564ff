// BullMQ on the real Redis at 127.0.0.1:6379, under a random key prefix that is deleted afterwards.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { createMailQueue, startMailWorker } from '../../src/mail/mail.queue.js';
import { createMailSender } from '../../src/mail/mail.sender.js';
import { createMailTransport } from '../../src/mail/mail.transport.js';
import type { MailJob, MailQueue } from '../../src/mail/mail.types.js';
import { openDatabase, type Database } from '../../src/persistence/database.js';
import { claimedInsertSql, type ClaimedInsert } from '../../src/persistence/mail-outbox.repository.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { startRedis, stopRedis } from '../support/redis-server.js';
import { freePort } from '../support/relying-party.js';
import { deleteKeys, mailStore, SEAL_KEYS, waitUntil } from './mail-store.js';
import { captureLogger, startSmtpSink, type SmtpSink } from './smtp-sink.js';

const REDIS_URL = 'redis://127.0.0.1:6379';
const OTP = '50617283';
const prefix = `test-mail-${randomUUID()}`;
const job = (locale: 'ja' | 'en'): MailJob => ({
  to: ['hanako@example.jp'],
  template: 'login-otp',
  locale,
  params: { userId: 'p-01-usr007', otp: OTP, expiresMinutes: '10', clientName: 'Demo site' },
});
const mailConfig = { mailFrom: 'no-reply@example.test', devMailbox: false };
let testDb: TestDatabase;
let db: Database;
beforeAll(async () => {
  testDb = await createTestDatabase('bullmq');
  db = await openDatabase({ databaseUrl: testDb.url, dataDir: '/tmp' });
});
afterAll(async () => {
  await db?.close();
  await testDb?.drop();
});
const stored = () => ({ store: mailStore(db), sealKeys: SEAL_KEYS });


/** Resolves once the captured log holds `text` (a positive marker), or fails after `timeoutMs`. */
const waitForLog = (log: { output(): string }, text: string, timeoutMs = 10_000) => waitUntil(() => log.output().includes(text), `a log line with "${text}"`, timeoutMs);

/** Jobs of one queue by state, read through BullMQ's own view of Redis. */
async function jobCounts(queueName: string): Promise<Record<string, number>> {
  const queue = new Queue(queueName, { connection: { url: REDIS_URL }, prefix });
  try {
    return await queue.getJobCounts('waiting', 'active', 'delayed');
  } finally {
    await queue.close();
  }
}

describe('BullMQ mail queue on Redis', () => {
  let sink: SmtpSink | undefined;
  const closeables: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    for (const c of closeables.splice(0).reverse()) await c.close();
    await sink?.close();
    sink = undefined;
  });
  afterAll(() => deleteKeys(REDIS_URL, `${prefix}:*`));

  test('a job enqueued with MAIL_WORKER=inline is delivered by the in-process BullMQ worker', async () => {
    sink = await startSmtpSink();
    const log = captureLogger();
    const sender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger });
    const queue: MailQueue = createMailQueue({
      config: { redisUrl: REDIS_URL, mailWorker: 'inline' },
      sender,
      logger: log.logger,
      ...stored(),
      options: { prefix, queueName: 'inline', retry: { backoffMs: 20 } },
    });
    closeables.push(queue);
    await queue.enqueue(job('ja'));
    const [mail] = await sink.waitFor(1);
    expect(mail?.subject).toBe('【あんしんログインサービス】ワンタイムパスワードのお知らせ');
    expect(mail?.to).toEqual(['hanako@example.jp']);
    expect(mail?.text).toContain(OTP);
    await queue.close();
    expect(log.output()).toContain('"msg":"mail sent"');
    expect(log.output()).not.toContain(OTP);
  });

  test('with MAIL_WORKER=external a separate worker delivers, retrying temporary refusals with backoff', async () => {
    sink = await startSmtpSink({ refuse: (n) => (n <= 2 ? 451 : undefined) });
    const log = captureLogger();
    const sender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger });
    const options = { prefix, queueName: 'external', retry: { backoffMs: 50 } };
    const queue = createMailQueue({ config: { redisUrl: REDIS_URL, mailWorker: 'external' }, sender, logger: log.logger, ...stored(), options });
    closeables.push(queue);
    await queue.enqueue(job('en'));
    // Nobody is processing yet: the job waits in Redis, untouched.
    expect(await jobCounts(options.queueName)).toEqual({ waiting: 1, active: 0, delayed: 0 });
    expect(sink.refusals).toBe(0);

    const worker = startMailWorker({ config: { redisUrl: REDIS_URL }, sender, logger: log.logger, ...stored(), options });
    closeables.push(worker);
    await worker.ready();
    const [mail] = await sink.waitFor(1);
    expect(mail?.subject).toBe('[Anshin Login Service] Your one-time password');
    expect(sink.refusals).toBe(2);
    const retries = log.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'mail delivery failed; will retry');
    expect(retries.map((r) => [r.attempt, r.retryInMs])).toEqual([
      [1, 50],
      [2, 100],
    ]);
    expect(log.output()).not.toContain(OTP);
  });

  test('a server that keeps refusing is retried until the deliverBy, then given up: the job is removed, the outbox table lists it, the code is marked', async () => {
    sink = await startSmtpSink({ refuse: () => 451 });
    const log = captureLogger();
    const sender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger });
    const queue = createMailQueue({
      config: { redisUrl: REDIS_URL, mailWorker: 'inline' },
      sender,
      logger: log.logger,
      ...stored(),
      options: { prefix, queueName: 'failing', retry: { backoffMs: 20, codeMaxDelayMs: 80 } },
    });
    closeables.push(queue);
    const otp = await db.prisma.oneTimePassword.create({ data: { purpose: 'login', codeHmac: 'x', expiresAt: new Date(Date.now() + 60_000) } });
    // Giving up is a matter of time (the deliverBy), so the window leaves room for a loaded machine:
    // at the 80 ms cap it holds dozens of tries, and only more than five are asked for.
    await queue.enqueue({ ...job('ja'), deliverBy: new Date(Date.now() + 5_000), otpId: otp.id, tenantId: 't1' });
    await waitForLog(log, 'giving up');
    // More tries than the old fixed budget of five, with the wait capped.
    expect(sink.refusals).toBeGreaterThan(5);
    const retries = log.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'mail delivery failed; will retry');
    expect(Math.max(...retries.map((r) => Number(r.retryInMs)))).toBe(80);
    const gaveUp = log.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'mail delivery failed; giving up');
    expect(gaveUp).toHaveLength(1);
    expect(gaveUp[0]).toMatchObject({ template: 'login-otp' });
    // The last try is either the last refusal or a try that found the deliverBy passed.
    expect(Number(gaveUp[0]!.attempt) - sink.refusals).toBeLessThanOrEqual(1);
    const failed = await waitUntil(() => db.prisma.mailMessage.findFirst({ where: { otpId: otp.id } }), 'the given-up mail in the outbox table');
    expect(failed).toMatchObject({ status: 'failed', payload: null, tenantId: 't1', recipients: 1, maskedTo: 'ha***@example.jp', attempts: gaveUp[0]!.attempt });
    await waitUntil(async () => (await db.prisma.oneTimePassword.findUnique({ where: { id: otp.id } }))?.deliveryFailedAt, 'the code marked undelivered');
    expect(await queue.undelivered({ tenantId: 't1' })).toEqual([expect.objectContaining({ status: 'failed', source: 'outbox', template: 'login-otp' })]);
    await queue.close();
    // removeOnFail: the job data is not left in Redis.
    const redis = new Redis(REDIS_URL);
    try {
      const keys = await redis.keys(`${prefix}:failing:*`);
      for (const key of keys.filter((k) => /:failing:\d+$/.test(k))) expect(await redis.hgetall(key)).toEqual({});
      expect(await redis.zcard(`${prefix}:failing:failed`)).toBe(0);
    } finally {
      redis.disconnect();
    }
    expect(log.output()).not.toContain(OTP);
  });

  test('a waiting job holds neither the code nor the addresses readable in Redis, and operators see it', async () => {
    const log = captureLogger();
    const sender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: 'smtp://127.0.0.1:1' }), logger: log.logger });
    const queue = createMailQueue({ config: { redisUrl: REDIS_URL, mailWorker: 'external' }, sender, logger: log.logger, ...stored(), options: { prefix, queueName: 'at-rest' } });
    closeables.push(queue);
    await queue.enqueue({ ...job('en'), tenantId: 't2' });
    const redis = new Redis(REDIS_URL);
    try {
      const keys = (await redis.keys(`${prefix}:at-rest:*`)).filter((k) => /:at-rest:\d+$/.test(k));
      expect(keys).toHaveLength(1);
      const data = await redis.hget(keys[0]!, 'data');
      expect(data).toContain('login-otp');
      expect(data).not.toContain(OTP);
      expect(data).not.toContain('hanako@example.jp');
    } finally {
      redis.disconnect();
    }
    expect(await queue.undelivered({ tenantId: 't2' })).toEqual([expect.objectContaining({ status: 'pending', source: 'bullmq', template: 'login-otp', maskedTo: ['ha***@example.jp'] })]);
  });

  test('a permanent (5xx) refusal is given up at once', async () => {
    sink = await startSmtpSink({ refuse: () => 550 });
    const log = captureLogger();
    const sender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger });
    const queue = createMailQueue({
      config: { redisUrl: REDIS_URL, mailWorker: 'inline' },
      sender,
      logger: log.logger,
      ...stored(),
      options: { prefix, queueName: 'permanent', retry: { backoffMs: 20 } },
    });
    closeables.push(queue);
    await queue.enqueue(job('en'));
    await waitForLog(log, 'giving up');
    // The job leaves `active` just after the log line (failed, and removed). A retry would be
    // scheduled (delayed) before the failure is reported; the queue is empty instead.
    const counts = await waitUntil(async () => {
      const c = await jobCounts('permanent');
      return c.active === 0 ? c : undefined;
    }, 'the job to leave active');
    expect(counts).toEqual({ waiting: 0, active: 0, delayed: 0 });
    expect(sink.refusals).toBe(1);
    expect(log.output()).toMatch(/"attempt":1,.*giving up/);
  });

  /** Stores a staged message as a login code's statement does: its row inside another statement. */
  async function storeStaged(row: ClaimedInsert): Promise<void> {
    const params: unknown[] = [];
    await db.sql.query(`WITH mail AS (${claimedInsertSql(params, row)}) SELECT 1`, params);
  }

  test('a staged mail is stored with its code and handed to BullMQ after the statement ran; its outbox row then goes', async () => {
    sink = await startSmtpSink();
    const log = captureLogger();
    const sender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger });
    const options = { prefix, queueName: 'staged', outbox: { pollMs: 60_000 } };
    const queue = createMailQueue({ config: { redisUrl: REDIS_URL, mailWorker: 'external' }, sender, logger: log.logger, ...stored(), options });
    closeables.push(queue);
    const staged = queue.stage?.(job('ja'));
    expect(staged).toBeDefined();
    await storeStaged(staged!.row);
    // Until it is handed over, the sealed mail is in the table, taken by this instance: not yet in Redis.
    const [row] = await db.prisma.mailMessage.findMany({ where: { id: staged!.row.id } });
    expect(row).toMatchObject({ status: 'pending', attempts: 1 });
    expect(row!.leaseToken).not.toBeNull();
    expect(row!.payload).not.toContain(OTP);
    expect(await jobCounts(options.queueName)).toEqual({ waiting: 0, active: 0, delayed: 0 });

    staged!.stored();
    await waitUntil(async () => (await db.prisma.mailMessage.count({ where: { id: staged!.row.id } })) === 0, 'the handed-over row gone');
    expect(await jobCounts(options.queueName)).toEqual({ waiting: 1, active: 0, delayed: 0 });
    const worker = startMailWorker({ config: { redisUrl: REDIS_URL }, sender, logger: log.logger, ...stored(), options });
    closeables.push(worker);
    const [mail] = await sink.waitFor(1);
    expect(mail?.text).toContain(OTP);
    // Invalid jobs are refused as enqueue refuses them; a closing queue stages nothing (enqueue then refuses).
    expect(() => queue.stage!({ ...job('ja'), to: ['not an address'] })).toThrow();
    await queue.close();
    expect(queue.stage!(job('ja'))).toBeUndefined();
  });

  test('a staged mail whose instance died before handing it to BullMQ is handed over by another once its lease runs out, once', async () => {
    sink = await startSmtpSink();
    const log = captureLogger();
    const sender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger });
    const options = { prefix, queueName: 'orphan', retry: { backoffMs: 20 }, outbox: { pollMs: 50, leaseMs: 600 } };
    // The "dying" instance stages and stores the row, and never calls stored() (killed right after the response).
    const dying = createMailQueue({ config: { redisUrl: REDIS_URL, mailWorker: 'external' }, sender, logger: log.logger, ...stored(), options: { ...options, outbox: { pollMs: 60_000, leaseMs: 600 } } });
    const staged = dying.stage?.(job('en'));
    expect(staged).toBeDefined();
    await storeStaged(staged!.row);
    await dying.close();
    const started = Date.now();
    // A new instance, with its own SMTP connections (closing the dying queue closed its sender).
    const otherSender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger });
    const other = createMailQueue({ config: { redisUrl: REDIS_URL, mailWorker: 'inline' }, sender: otherSender, logger: log.logger, ...stored(), options });
    closeables.push(other);
    const [mail] = await sink.waitFor(1);
    expect(mail?.text).toContain(OTP);
    expect(Date.now() - started).toBeGreaterThanOrEqual(400);
    await waitUntil(async () => (await db.prisma.mailMessage.count({ where: { id: staged!.row.id } })) === 0, 'the handed-over row gone');
    // Handed over once: a later look at the table finds nothing more to hand over (a positive marker:
    // another mail enqueued after it arrives alone).
    await other.enqueue(job('ja'));
    await sink.waitFor(2);
    expect(sink.received).toHaveLength(2);
  });

  test('a staged mail that Redis does not take after the response is recorded as not sent, with its code', async () => {
    sink = await startSmtpSink();
    const port = await freePort();
    const redis = await startRedis(port);
    try {
      const log = captureLogger();
      const sender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger });
      const queue = createMailQueue({
        config: { redisUrl: `redis://127.0.0.1:${port}`, mailWorker: 'external' },
        sender,
        logger: log.logger,
        ...stored(),
        options: { prefix, queueName: 'refused', enqueueTimeoutMs: 1_000, outbox: { pollMs: 60_000 } },
      });
      closeables.push(queue);
      const otp = await db.prisma.oneTimePassword.create({ data: { purpose: 'login', codeHmac: 'x'.repeat(64), expiresAt: new Date(Date.now() + 600_000) } });
      const staged = queue.stage?.({ ...job('ja'), otpId: otp.id });
      await storeStaged(staged!.row);
      await stopRedis(redis);
      staged!.stored();
      await waitForLog(log, 'mail could not be queued');
      const row = await waitUntil(() => db.prisma.mailMessage.findFirst({ where: { id: staged!.row.id, status: 'failed' } }), 'the row marked failed');
      expect(row.payload).toBeNull();
      await waitUntil(async () => (await db.prisma.oneTimePassword.findUnique({ where: { id: otp.id } }))?.deliveryFailedAt, 'the code marked undelivered');
    } finally {
      await stopRedis(redis);
    }
  });

  test('a worker killed while it holds a job leaves it to another worker within seconds', async () => {
    // An SMTP server that accepts the connection and never answers: the first worker is stuck mid-job.
    const held: Socket[] = [];
    const stalling = createServer((socket) => held.push(socket));
    stalling.listen(0, '127.0.0.1');
    await once(stalling, 'listening');
    const connected = once(stalling, 'connection');
    sink = await startSmtpSink();
    const log = captureLogger();
    const options = { prefix, queueName: 'killed' };
    const sender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger });
    const queue = createMailQueue({ config: { redisUrl: REDIS_URL, mailWorker: 'external' }, sender, logger: log.logger, ...stored(), options });
    closeables.push(queue);

    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./mail-worker.child.ts', import.meta.url))], {
      env: {
        ...process.env,
        REDIS_URL,
        SMTP_URL: `smtp://127.0.0.1:${(stalling.address() as AddressInfo).port}`,
        MAIL_PREFIX: prefix,
        MAIL_QUEUE: options.queueName,
        DATABASE_URL: testDb.url,
        MAIL_SEAL_KEY: SEAL_KEYS[0]!,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = once(child, 'exit');
    try {
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
      while (!out.includes('ready')) await Promise.race([once(child.stdout, 'data'), exited.then(() => Promise.reject(new Error('worker exited')))]);
      await queue.enqueue(job('ja'));
      await connected; // the child holds the job now
      child.kill('SIGKILL');
      await exited;

      const worker = startMailWorker({ config: { redisUrl: REDIS_URL }, sender, logger: log.logger, ...stored(), options });
      closeables.push(worker);
      const [mail] = await sink.waitFor(1, 15_000);
      expect(mail?.text).toContain(OTP);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      for (const socket of held) socket.destroy();
      await new Promise((r) => stalling.close(r));
    }
  }, 30_000);
});
