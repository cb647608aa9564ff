// A mail worker in its own process, so a test can kill it with SIGKILL while it holds a job.
// Run with `node --import tsx`; configured by REDIS_URL, SMTP_URL, MAIL_PREFIX, MAIL_QUEUE, DATABASE_URL
// (the outbox table for given-up mail) and MAIL_SEAL_KEY (opens the sealed jobs).
import { pino } from 'pino';
import { startMailWorker } from '../../src/mail/mail.queue.js';
import { createMailSender } from '../../src/mail/mail.sender.js';
import { createMailTransport } from '../../src/mail/mail.transport.js';
import { openDatabase } from '../../src/persistence/database.js';
import { mailStore } from './mail-store.js';

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
  store: mailStore(await openDatabase({ databaseUrl: env('DATABASE_URL'), dataDir: '/tmp' })),
  sealKeys: [env('MAIL_SEAL_KEY')],
  options: { prefix: env('MAIL_PREFIX'), queueName: env('MAIL_QUEUE') },
});
await worker.ready();
process.stdout.write('ready\n');
