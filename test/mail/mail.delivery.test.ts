import { createInProcessMailQueue, createMailQueue } from '../../src/mail/mail.queue.js';
import { createMailSender } from '../../src/mail/mail.sender.js';
import { createMailTransport } from '../../src/mail/mail.transport.js';
import type { MailJob, MailQueue } from '../../src/mail/mail.types.js';
import { captureLogger, startSmtpSink, type SmtpSink } from './smtp-sink.js';

const OTP = '73190428';
const otpJob = (locale: 'ja' | 'en', to = ['taro@example.jp']): MailJob => ({
  to,
  template: 'login-otp',
  locale,
  params: { userId: 'p-01-usr012', otp: OTP, expiresMinutes: '10', clientName: 'デモサイト' },
});
const noDevMailbox = { mailFrom: '"Anshin Login" <no-reply@example.test>', devMailbox: false };

describe('in-process mail queue over real SMTP', () => {
  let sink: SmtpSink | undefined;
  let queue: MailQueue | undefined;
  afterEach(async () => {
    await queue?.close();
    await sink?.close();
    queue = undefined;
    sink = undefined;
  });

  function setup(refuse?: (n: number) => number | undefined, retry = { attempts: 3, backoffMs: 10 }) {
    return startSmtpSink({ refuse }).then((s) => {
      sink = s;
      const log = captureLogger();
      const transport = createMailTransport({ smtpUrl: s.url });
      const sender = createMailSender({ config: noDevMailbox, transport, logger: log.logger });
      queue = createMailQueue({ config: { redisUrl: undefined, mailWorker: 'inline' }, sender, logger: log.logger, options: { retry } });
      return { sink: s, queue, log };
    });
  }

  test.each([
    ['ja', '【あんしんログインサービス】ワンタイムパスワードのお知らせ', 'ワンタイムパスワード：'],
    ['en', '[Anshin Login Service] Your one-time password', 'One-time password: '],
  ] as const)('a %s OTP mail arrives with its subject, recipients and code', async (locale, subject, label) => {
    const { sink, queue, log } = await setup();
    const started = Date.now();
    await queue.enqueue(otpJob(locale, ['taro@example.jp', 'taro.mobile@example.jp']));
    // Accepted, not yet delivered: enqueue does not wait for SMTP.
    expect(sink.received).toHaveLength(0);
    const [mail] = await sink.waitFor(1);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(mail?.subject).toBe(subject);
    expect(mail?.to).toEqual(['taro@example.jp', 'taro.mobile@example.jp']);
    expect(mail?.from).toBe('no-reply@example.test');
    expect(mail?.text).toContain(`${label}${OTP}`);
    expect(mail?.html).toContain(OTP);
    await queue.close();
    const sent = log.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'mail sent');
    expect(sent).toMatchObject({ template: 'login-otp', locale, to: ['taro@example.jp', 'taro.mobile@example.jp'] });
    expect(log.output()).not.toContain(OTP);
  });

  test('temporary refusals are retried with backoff until the mail goes through', async () => {
    const { sink, queue, log } = await setup((n) => (n <= 2 ? 451 : undefined), { attempts: 5, backoffMs: 40 });
    const started = Date.now();
    await queue.enqueue(otpJob('ja'));
    await sink.waitFor(1);
    // Waits of 40 and 80 ms after the two refusals.
    expect(Date.now() - started).toBeGreaterThanOrEqual(120);
    expect(sink.refusals).toBe(2);
    await queue.close();
    const warnings = log.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'mail delivery failed; will retry');
    expect(warnings.map((w) => [w.attempt, w.retryInMs])).toEqual([
      [1, 40],
      [2, 80],
    ]);
    expect(log.output()).not.toContain(OTP);
  });

  test('a server that keeps refusing is given up after the configured attempts, and close() waits for that', async () => {
    const { sink, queue, log } = await setup(() => 421, { attempts: 4, backoffMs: 5 });
    await queue.enqueue(otpJob('en'));
    await queue.close();
    expect(sink.refusals).toBe(4);
    expect(sink.received).toHaveLength(0);
    const gaveUp = log.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'mail delivery failed; giving up');
    expect(gaveUp).toHaveLength(1);
    expect(gaveUp[0]).toMatchObject({ template: 'login-otp', attempt: 4, attempts: 4 });
    expect(log.output()).not.toContain(OTP);
  });

  test('a permanent (5xx) refusal is not retried', async () => {
    const { sink, queue, log } = await setup(() => 550, { attempts: 5, backoffMs: 5 });
    await queue.enqueue(otpJob('ja'));
    await queue.close();
    expect(sink.refusals).toBe(1);
    expect(log.output()).toContain('giving up');
  });

  test('an unreachable SMTP server fails the attempts without crashing anything', async () => {
    const log = captureLogger();
    const transport = createMailTransport({ smtpUrl: 'smtp://127.0.0.1:1' });
    const sender = createMailSender({ config: noDevMailbox, transport, logger: log.logger });
    queue = createInProcessMailQueue({ sender, logger: log.logger, options: { retry: { attempts: 2, backoffMs: 5 } } });
    await queue.enqueue(otpJob('ja'));
    await queue.close();
    expect(log.output()).toContain('giving up');
    expect(log.output()).not.toContain(OTP);
  });

  test('an invalid job is refused at enqueue, and a closed queue takes no jobs', async () => {
    const { queue } = await setup();
    await expect(queue.enqueue({ ...otpJob('ja'), to: [] })).rejects.toThrow(/invalid mail job: to/);
    await expect(queue.enqueue({ ...otpJob('ja'), template: 'nope' as MailJob['template'] })).rejects.toThrow(/template/);
    await queue.close();
    await expect(queue.enqueue(otpJob('ja'))).rejects.toThrow(/closed/);
  });

  test('several jobs are delivered concurrently and close() waits for all of them', async () => {
    const { sink, queue } = await setup();
    for (let i = 0; i < 12; i++) await queue.enqueue(otpJob(i % 2 ? 'ja' : 'en', [`user${i}@example.jp`]));
    await queue.close();
    expect(sink.received).toHaveLength(12);
    expect(new Set(sink.received.flatMap((m) => m.to)).size).toBe(12);
  });
});

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
