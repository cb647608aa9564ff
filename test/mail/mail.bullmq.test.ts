// BullMQ on the real Redis at 127.0.0.1:6379, under a random key prefix that is deleted afterwards.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createMailQueue, startMailWorker } from '../../src/mail/mail.queue.js';
import { createMailSender } from '../../src/mail/mail.sender.js';
import { createMailTransport } from '../../src/mail/mail.transport.js';
import type { MailJob, MailQueue } from '../../src/mail/mail.types.js';
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
      options: { prefix, queueName: 'inline', retry: { attempts: 3, backoffMs: 20 } },
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
    const options = { prefix, queueName: 'external', retry: { attempts: 5, backoffMs: 50 } };
    const queue = createMailQueue({ config: { redisUrl: REDIS_URL, mailWorker: 'external' }, sender, logger: log.logger, options });
    closeables.push(queue);
    await queue.enqueue(job('en'));
    await new Promise((r) => setTimeout(r, 300));
    expect(sink.refusals).toBe(0); // nobody is processing yet

    const worker = startMailWorker({ config: { redisUrl: REDIS_URL }, sender, logger: log.logger, options });
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

  test('a server that keeps refusing is given up after the configured attempts; the job is removed', async () => {
    sink = await startSmtpSink({ refuse: () => 451 });
    const log = captureLogger();
    const sender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger });
    const queue = createMailQueue({
      config: { redisUrl: REDIS_URL, mailWorker: 'inline' },
      sender,
      logger: log.logger,
      options: { prefix, queueName: 'failing', retry: { attempts: 3, backoffMs: 20 } },
    });
    closeables.push(queue);
    await queue.enqueue(job('ja'));
    const deadline = Date.now() + 10_000;
    while (!log.output().includes('giving up') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(sink.refusals).toBe(3);
    const gaveUp = log.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'mail delivery failed; giving up');
    expect(gaveUp).toHaveLength(1);
    expect(gaveUp[0]).toMatchObject({ attempt: 3, attempts: 3, to: ['hanako@example.jp'] });
    await queue.close();
    // removeOnFail: the job data (with its OTP) is not left in Redis.
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

  test('a permanent (5xx) refusal is given up at once', async () => {
    sink = await startSmtpSink({ refuse: () => 550 });
    const log = captureLogger();
    const sender = createMailSender({ config: mailConfig, transport: createMailTransport({ smtpUrl: sink.url }), logger: log.logger });
    const queue = createMailQueue({
      config: { redisUrl: REDIS_URL, mailWorker: 'inline' },
      sender,
      logger: log.logger,
      options: { prefix, queueName: 'permanent', retry: { attempts: 5, backoffMs: 20 } },
    });
    closeables.push(queue);
    await queue.enqueue(job('en'));
    const deadline = Date.now() + 10_000;
    while (!log.output().includes('giving up') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 200)); // a wrongly scheduled retry would show by now
    expect(sink.refusals).toBe(1);
    expect(log.output()).toMatch(/"attempt":1,"attempts":5.*giving up/);
  });
});
