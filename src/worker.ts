// `npm run worker`: delivers the mail queued in Redis (BullMQ) by the HTTP processes. Run it with
// MAIL_WORKER=external on the HTTP side, or alongside MAIL_WORKER=inline for more throughput.
import { ConfigError, loadConfig } from './config/index.js';
import { createLogger } from './logger.js';
import { startMailWorker } from './mail/mail.queue.js';
import { createMailSender } from './mail/mail.sender.js';
import { createMailTransport } from './mail/mail.transport.js';
import { openDatabase, type Database } from './persistence/database.js';
import { DevMailRepository } from './persistence/dev-mail.repository.js';

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
  // The embedded PGlite database belongs to the one process that opened it, so a separate worker
  // can only write to the dev mailbox through a shared PostgreSQL.
  const devMailbox = config.devMailbox && !config.smtpUrl; // the dev mailbox only stands in for SMTP
  if (devMailbox && !config.databaseUrl) {
    console.error(
      'The dev mailbox is on (DEV_MAILBOX, default in development) but DATABASE_URL is unset: the embedded ' +
        'database cannot be shared with the HTTP process. Set DATABASE_URL, set DEV_MAILBOX=false, or use MAIL_WORKER=inline.',
    );
    process.exit(1);
  }
  if (!config.smtpUrl) logger.warn('SMTP_URL is unset: mail is not delivered, only recorded in the dev mailbox or dropped');

  let db: Database | undefined;
  if (devMailbox) db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger });
  const transport = createMailTransport(config);
  const sender = createMailSender({ config, transport, logger, devMail: db ? new DevMailRepository(db.prisma) : undefined });
  const worker = startMailWorker({ config, sender, logger });
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
      await db?.close();
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
