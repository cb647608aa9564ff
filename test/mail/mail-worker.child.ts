// A mail worker in its own process, so a test can kill it with SIGKILL while it holds a job.
// Run with `node --import tsx`; configured by REDIS_URL, SMTP_URL, MAIL_PREFIX and MAIL_QUEUE.
import { pino } from 'pino';
import { startMailWorker } from '../../src/mail/mail.queue.js';
import { createMailSender } from '../../src/mail/mail.sender.js';
import { createMailTransport } from '../../src/mail/mail.transport.js';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

const logger = pino({ level: 'silent' });
const sender = createMailSender({
  config: { mailFrom: 'no-reply@example.test', devMailbox: false },
  transport: createMailTransport({ smtpUrl: env('SMTP_URL') }),
  logger,
});
const worker = startMailWorker({
  config: { redisUrl: env('REDIS_URL') },
  sender,
  logger,
  options: { prefix: env('MAIL_PREFIX'), queueName: env('MAIL_QUEUE') },
});
await worker.ready();
process.stdout.write('ready\n');
