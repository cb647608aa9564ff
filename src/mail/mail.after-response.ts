import type { Logger } from '../logger.js';
import { errorMessage } from './mail.sender.js';
import type { MailJob, MailQueue } from './mail.types.js';

/**
 * Queues a mail once the current response is on its way, so a step that mails only live accounts
 * (a login code) answers in the same time for every user ID. A failure is logged (template and reason,
 * never the job: it may hold a code), as nobody waits for it any more.
 */
export function enqueueAfterResponse(mail: MailQueue, job: MailJob, logger: Pick<Logger, 'error'>): void {
  setImmediate(() => {
    Promise.resolve()
      .then(() => mail.enqueue(job))
      .catch((err: unknown) => logger.error({ template: job.template, err: errorMessage(err) }, 'mail could not be queued'));
  });
}
