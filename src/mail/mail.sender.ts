import type { AppConfig } from '../config/index.js';
import type { Logger } from '../logger.js';
import type { DevMailRepository } from '../persistence/dev-mail.repository.js';
import { renderMail, type MailRenderer } from './mail.renderer.js';
import type { MailTransport } from './mail.transport.js';
import { PermanentMailError, parseMailJob, type MailJob, type MailSender } from './mail.types.js';

export type { MailSender } from './mail.types.js';

export interface MailSenderDeps {
  config: Pick<AppConfig, 'mailFrom' | 'devMailbox'>;
  transport: MailTransport;
  logger: Logger;
  /** Required when `config.devMailbox` is on and the transport delivers nowhere (no SMTP_URL). */
  devMail?: Pick<DevMailRepository, 'record' | 'deleteOlderThan'>;
  renderer?: MailRenderer;
  /** Dev mailbox messages older than this are pruned (at most once an hour). Default 7 days. */
  devMailboxRetentionMs?: number;
}

const HOUR = 3_600_000;

/**
 * Renders and sends one job, once. Throws on failure so the queue can retry; throws PermanentMailError
 * when a retry would fail the same way. The log line names template and recipients, never the body.
 */
export function createMailSender(deps: MailSenderDeps): MailSender {
  const { config, transport, logger, devMail } = deps;
  const render = deps.renderer ? deps.renderer.render.bind(deps.renderer) : renderMail;
  const retentionMs = deps.devMailboxRetentionMs ?? 7 * 24 * HOUR;
  // The dev mailbox is a delivery target, not a copy: beside real SMTP it would keep codes readable at rest.
  const recordsDevMail = config.devMailbox && !transport.delivers;
  if (recordsDevMail && !devMail) throw new Error('createMailSender: devMailbox is on but no dev-mail repository was given');
  let lastPrune = 0;

  async function pruneDevMailbox(): Promise<void> {
    if (!devMail || Date.now() - lastPrune < HOUR) return;
    lastPrune = Date.now();
    try {
      await devMail.deleteOlderThan(new Date(Date.now() - retentionMs));
    } catch (err) {
      logger.warn({ err: errorMessage(err) }, 'dev mailbox: pruning old messages failed');
    }
  }

  return {
    async send(input: MailJob) {
      const job = parseMailJob(input);
      const rendered = render(job); // throws PermanentMailError on a missing param or template
      let result;
      try {
        result = await transport.send({ from: config.mailFrom, to: job.to, ...rendered });
      } catch (err) {
        if (isPermanentSmtpError(err)) throw new PermanentMailError(`SMTP server refused the mail: ${errorMessage(err)}`, { cause: err });
        throw err;
      }
      const log = { template: job.template, locale: job.locale, to: job.to, messageId: result.messageId };

      if (recordsDevMail && devMail) {
        // The dev mailbox is the delivery here, so a failure lets the queue retry.
        await devMail.record({ to: job.to, subject: rendered.subject, text: rendered.text, html: rendered.html });
        void pruneDevMailbox();
      }

      if (!transport.delivers) {
        logger.info(log, recordsDevMail ? 'mail recorded in the dev mailbox (no SMTP_URL)' : 'mail dropped: neither SMTP_URL nor the dev mailbox is configured');
      } else if (result.rejected.length) {
        logger.warn({ ...log, rejected: result.rejected }, 'mail sent, but the SMTP server refused some recipients');
      } else {
        logger.info(log, 'mail sent');
      }
    },
    close: () => transport.close(),
  };
}

/** 5xx SMTP replies (except 503) would be refused again; nodemailer marks them `permanent`. */
function isPermanentSmtpError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { permanent?: unknown }).permanent === true;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
