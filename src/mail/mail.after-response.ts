import type { Logger } from '../logger.js';
import { errorMessage } from './mail.sender.js';
import type { MailJob, MailQueue } from './mail.types.js';

/**
 * Queues a mail once the current response is on its way, so a step that mails only live accounts
 * (a login code) answers in the same time for every user ID. A failure is logged (template and reason,
 * never the job: it may hold a code), as nobody waits for it any more; `onFailure` lets the caller
 * record it where the user will meet it (a code's row, so its page says the code could not be sent).
 */
export function enqueueAfterResponse(mail: MailQueue, job: MailJob, logger: Pick<Logger, 'error'>, onFailure?: () => Promise<void>): void {
  setImmediate(() => {
    Promise.resolve()
      .then(() => mail.enqueue(job))
      .catch(async (err: unknown) => {
        logger.error({ template: job.template, err: errorMessage(err) }, 'mail could not be queued');
        try {
          await onFailure?.();
        } catch (e) {
          logger.error({ template: job.template, err: errorMessage(e) }, 'recording that a mail could not be queued failed');
        }
      });
  });
}
