import type { Logger } from '../logger.js';
import type { MailOutboxRepository } from '../persistence/mail-outbox.repository.js';
import type { OneTimePasswordRepository } from '../persistence/one-time-password.repository.js';
import type { MailEnvelope, MailSealer } from './mail.envelope.js';
import { errorMessage } from './mail.sender.js';
import { DEFAULT_RETRY_POLICY, PermanentMailError, nextAttemptAt, retryDelayMs, type MailSender, type MailTemplate, type RetryPolicy } from './mail.types.js';

/** Where the queues keep what outlives an attempt: the outbox table, and the OTP rows they mark. */
export interface MailStore {
  outbox: Pick<MailOutboxRepository, 'add' | 'addClaimed' | 'claimDue' | 'renewLease' | 'release' | 'markSent' | 'markRetry' | 'markFailed' | 'recordFailed' | 'listUndelivered' | 'deleteFinished'>;
  otps: Pick<OneTimePasswordRepository, 'markDeliveryFailed'>;
}

export type AttemptOutcome = { kind: 'sent' } | { kind: 'retry'; at: number; error: string } | { kind: 'failed'; error: string };

export interface AttemptInput {
  jobId: string | undefined;
  /** The sealed job as stored. */
  envelope: MailEnvelope;
  template: MailTemplate;
  deliverBy: number;
  /** 1 for the first attempt. */
  attempt: number;
}

export function retryPolicy(overrides: Partial<RetryPolicy> = {}): RetryPolicy {
  const p = { ...DEFAULT_RETRY_POLICY, ...overrides };
  return { ...p, backoffMs: Math.max(0, p.backoffMs) };
}

/**
 * One delivery attempt, the same for BullMQ and the outbox: opens the sealed job, sends it, and on
 * failure says whether and when to try again (never after deliverBy; never for a permanent error).
 */
export async function attemptDelivery(
  deps: { sender: MailSender; sealer: MailSealer; policy: RetryPolicy; logger: Logger },
  input: AttemptInput,
): Promise<AttemptOutcome> {
  const { logger, policy } = deps;
  const base = { jobId: input.jobId, template: input.template, attempt: input.attempt, deliverBy: new Date(input.deliverBy).toISOString() };
  if (Date.now() >= input.deliverBy) {
    const error = 'not delivered before its deliverBy';
    logger.error({ ...base, err: error }, 'mail delivery failed; giving up');
    return { kind: 'failed', error };
  }
  try {
    const job = deps.sealer.open(input.envelope);
    await deps.sender.send(job);
    return { kind: 'sent' };
  } catch (err) {
    const error = errorMessage(err);
    const at = err instanceof PermanentMailError ? undefined : nextAttemptAt(policy, input.template, input.attempt, input.deliverBy);
    // Template and attempt only: the params may hold an OTP.
    if (at === undefined) {
      logger.error({ ...base, err: error }, 'mail delivery failed; giving up');
      return { kind: 'failed', error };
    }
    logger.warn({ ...base, err: error, retryInMs: retryDelayMs(policy, input.template, input.attempt) }, 'mail delivery failed; will retry');
    return { kind: 'retry', at, error };
  }
}

/** A code whose mail was given up: its flow's next step says so instead of waiting in silence. */
export async function markCodeUndelivered(store: MailStore, logger: Logger, otpId: string | null): Promise<void> {
  if (!otpId) return;
  try {
    await store.otps.markDeliveryFailed(otpId);
  } catch (err) {
    logger.warn({ err: errorMessage(err), otpId }, 'could not mark the one-time password as undelivered');
  }
}
