// `npm run worker`: delivers the mail queued in Redis (BullMQ) by the HTTP processes. Run it with
// MAIL_WORKER=external on the HTTP side, or alongside MAIL_WORKER=inline for more throughput.
import { ConfigError, loadConfig } from './config/index.js';
import { resolveSecrets } from './config/secrets.js';
import { createLogger } from './logger.js';
import { startMailWorker } from './mail/mail.queue.js';
import { createMailSender } from './mail/mail.sender.js';
import { createMailTransport } from './mail/mail.transport.js';
import { openDatabase, type Database } from './persistence/database.js';
import { DevMailRepository } from './persistence/dev-mail.repository.js';
import { MailOutboxRepository } from './persistence/mail-outbox.repository.js';
import { OneTimePasswordRepository } from './persistence/one-time-password.repository.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(1);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel, 'mail-worker');

  if (!config.redisUrl) {
    console.error(
      'The mail worker needs Redis: set REDIS_URL (e.g. redis://127.0.0.1:6379). ' +
        'Without Redis the HTTP process delivers mail itself and no worker is needed.',
    );
    process.exit(1);
  }
  // The worker records the mail it gives up (and marks their codes) in the database, and the embedded
  // PGlite database belongs to the one process that opened it: a separate worker needs PostgreSQL.
  if (!config.databaseUrl) {
    console.error(
      'The mail worker needs DATABASE_URL (the PostgreSQL database of the HTTP processes): the embedded ' +
        'database cannot be shared with the HTTP process. Set DATABASE_URL, or use MAIL_WORKER=inline.',
    );
    process.exit(1);
  }
  if (!config.smtpUrl) logger.warn('SMTP_URL is unset: mail is not delivered, only recorded in the dev mailbox or dropped');

  const db: Database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger, statementTimeoutMs: config.databaseTimeoutMs });
  const transport = createMailTransport(config);
  const sender = createMailSender({ config, transport, logger, devMail: config.devMailbox ? new DevMailRepository(db.prisma) : undefined });
  const worker = startMailWorker({
    config,
    sender,
    logger,
    store: { outbox: new MailOutboxRepository(db.prisma), otps: new OneTimePasswordRepository(db.prisma) },
    // The same keys as the HTTP processes (environment, or the file under DATA_DIR), to open what they sealed.
    sealKeys: resolveSecrets(config).cookieKeys,
    options: { retry: { codeTtlMs: config.otp.ttlSeconds * 1000 } },
  });
  await worker.ready();
  logger.info('mail worker started');

  let stopping = false;
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting without waiting for jobs in hand');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'mail worker stopping: finishing the jobs in hand');
    try {
      await worker.close();
      transport.close();
      await db.close();
      logger.info('mail worker stopped');
      process.exit(0);
    } catch (err) {
      logger.error({ err: err instanceof Error ? err.message : String(err) }, 'mail worker did not stop cleanly');
      process.exit(1);
    }
  };
  process.on('SIGTERM', (s) => void stop(s));
  process.on('SIGINT', (s) => void stop(s));
}

main().catch((err: unknown) => {
  console.error('mail worker failed to start:', err);
  process.exit(1);
});
