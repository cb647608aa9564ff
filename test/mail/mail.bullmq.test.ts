// BullMQ on the real Redis at 127.0.0.1:6379, under a random key prefix that is deleted afterwards.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createMailQueue, startMailWorker } from '../../src/mail/mail.queue.js';
import { createMailSender } from '../../src/mail/mail.sender.js';
import { createMailTransport } from '../../src/mail/mail.transport.js';
import type { MailJob, MailQueue } from '../../src/mail/mail.types.js';
import { openDatabase, type Database } from '../../src/persistence/database.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { mailStore, SEAL_KEYS, waitUntil } from './mail-store.js';
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

async function deleteKeys(pattern: string): Promise<void> {
  const redis = new Redis(REDIS_URL);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
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
  afterAll(() => deleteKeys(`${prefix}:*`));

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
    await new Promise((r) => setTimeout(r, 300));
    expect(sink.refusals).toBe(0); // nobody is processing yet

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
    await queue.enqueue({ ...job('ja'), deliverBy: new Date(Date.now() + 2_000), otpId: otp.id, tenantId: 't1' });
    await waitUntil(() => log.output().includes('giving up'), 'giving up');
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
    const deadline = Date.now() + 10_000;
    while (!log.output().includes('giving up') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 200)); // a wrongly scheduled retry would show by now
    expect(sink.refusals).toBe(1);
    expect(log.output()).toMatch(/"attempt":1,.*giving up/);
  });
});
