import { ServiceUnavailableError } from '../http/errors.js';
import type { Logger } from '../logger.js';
import { errorMessage } from './mail.sender.js';
import { PermanentMailError, type MailQueue } from './mail.types.js';

/** Retry-After of the 503 when the queue's store (Redis) does not take a job. */
const QUEUE_DOWN_RETRY_SECONDS = 30;

/**
 * A queue that cannot take a job (Redis down, shutting down) makes the request a 503 "try again
 * shortly" rather than a 500: nothing is wrong with the request. An invalid job stays an error.
 */
export function unavailableWhenQueueDown(queue: MailQueue, logger: Logger): MailQueue {
  return {
    async enqueue(job) {
      try {
        await queue.enqueue(job);
      } catch (err) {
        if (err instanceof PermanentMailError) throw err;
        // Template and recipients only: the params may hold an OTP.
        logger.warn({ template: job.template, to: job.to, err: errorMessage(err) }, 'mail queue did not take the job');
        throw new ServiceUnavailableError(QUEUE_DOWN_RETRY_SECONDS);
      }
    },
    close: () => queue.close(),
    undelivered: (filter) => queue.undelivered(filter),
    // Nothing to wait for: staging stores nothing (the caller's statement does).
    ...(queue.stage ? { stage: queue.stage.bind(queue) } : {}),
  };
}
