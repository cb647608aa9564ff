import { z } from 'zod';
import { LOCALES, type Locale } from '../i18n/index.js';
import type { ClaimedInsert } from '../persistence/mail-outbox.repository.js';
import { emailAddressSchema } from './email-address.js';

/**
 * Every mail the provider sends. Adding one = one entry here plus `templates/<name>.ja.txt` and
 * `templates/<name>.en.txt` (test/mail/mail.renderer.test.ts fails if a file is missing).
 */
export const MAIL_TEMPLATES = ['login-otp', 'account-locked', 'account-locked-temporary', 'new-ip-login', 'activation', 'activation-completed', 'account-unlocked', 'recovery-used', 'device-verify', 'devices-changed', 'secret-question-changed', 'login-method-changed', 'activation-reissued', 'signed-out-everywhere', 'passkey-registered', 'passkey-deleted'] as const;

/** One of MAIL_TEMPLATES. */
export type MailTemplate = (typeof MAIL_TEMPLATES)[number];

/** Mails that carry a code: worth delivering only until the code expires. The others are notices. */
export const CODE_TEMPLATES: readonly MailTemplate[] = ['login-otp', 'activation', 'device-verify'];

export const isCodeTemplate = (template: MailTemplate): boolean => CODE_TEMPLATES.includes(template);

/**
 * One mail to one person's devices (all addresses go into one message). `params` fill the template's
 * `{{placeholders}}`; `login-otp` carries the OTP, so jobs are never logged whole, and are kept at
 * rest (Redis, the outbox) only sealed.
 */
export interface MailJob {
  to: string[];
  template: MailTemplate;
  locale: Locale;
  params: Record<string, string>;
  /** Retries stop here. Default: a code mail the OTP TTL from now, a notice RetryPolicy.noticeTtlMs. */
  deliverBy?: Date;
  /** The one-time password row the mail carries: marked when the mail is finally given up. */
  otpId?: string;
  /** For operators' listings of undelivered mail. */
  tenantId?: string;
}

export interface MailQueue {
  /** Resolves once the job is accepted (stored); delivery (with retries) happens later. Rejects on an invalid job. */
  enqueue(job: MailJob): Promise<void>;
  /**
   * `job` made ready for the caller's own statement to store in the outbox table (a login code's,
   * which stores the code and its mail at once), already taken by this process; `stored()` once that
   * statement succeeded starts its delivery (with BullMQ: hands it to Redis, and the row goes).
   * Undefined (closing, a long backlog): enqueue it.
   * Throws as enqueue rejects, on an invalid job.
   */
  stage?(job: MailJob): StagedMail | undefined;
  /** Mail waiting for delivery or finally given up, newest first; never the payload. */
  undelivered(filter?: { tenantId?: string; limit?: number }): Promise<UndeliveredMail[]>;
  /**
   * Stops accepting jobs and finishes the attempts in hand (the outbox also gives the jobs this process
   * queued one attempt, so a short-lived CLI's mail goes out); retries wait in the outbox or Redis.
   */
  close(): Promise<void>;
}

/** A mail made ready by MailQueue.stage: the outbox row to insert, and what to call once it is. */
export interface StagedMail {
  readonly row: ClaimedInsert;
  stored(): void;
}

/** One message as operators see it: what, to how many, how old, how it went; never its content. */
export interface UndeliveredMail {
  id: string;
  status: 'pending' | 'failed';
  template: string;
  tenantId: string | null;
  recipients: number;
  maskedTo: string[];
  createdAt: Date;
  deliverBy: Date;
  attempts: number;
  nextAttemptAt: Date | null;
  lastError: string | null;
  /** `outbox` (database) or `bullmq` (a job waiting in Redis). */
  source: 'outbox' | 'bullmq';
}

export interface RenderedMail {
  subject: string;
  text: string;
  html: string;
}

/** Renders and delivers one job, once; retrying is the queue's business. */
export interface MailSender {
  send(job: MailJob): Promise<void>;
  /** Closes the transport's pooled SMTP connections; the queue that delivers through the sender calls it as it closes. */
  close(): void;
}

/**
 * Same rule for BullMQ and the outbox: after the n-th failure wait `backoffMs * 2^(n-1)`, capped, and
 * try again for as long as the mail is useful (its deliverBy); give up when the next try would be late.
 */
export interface RetryPolicy {
  /** The wait after the first failure; it doubles after each further one. Default 2 s. */
  backoffMs: number;
  /** Longest wait between tries of a code mail: a user is waiting on the code page. Default 30 s. */
  codeMaxDelayMs: number;
  /** Longest wait between tries of a notice. Default 5 minutes. */
  noticeMaxDelayMs: number;
  /** How long a code mail is tried when the job names no deliverBy: the OTP TTL. Default 10 minutes. */
  codeTtlMs: number;
  /** How long a notice (lock, changes, new IP) is tried. Default 24 hours. */
  noticeTtlMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  backoffMs: 2_000,
  codeMaxDelayMs: 30_000,
  noticeMaxDelayMs: 5 * 60_000,
  codeTtlMs: 10 * 60_000,
  noticeTtlMs: 24 * 3_600_000,
};

/** The wait after the n-th failed attempt (n >= 1) of a mail of this template. */
export function retryDelayMs(policy: RetryPolicy, template: MailTemplate, attemptsMade: number): number {
  const cap = isCodeTemplate(template) ? policy.codeMaxDelayMs : policy.noticeMaxDelayMs;
  return Math.min(cap, Math.round(2 ** Math.min(attemptsMade - 1, 40) * policy.backoffMs));
}

/** When the next try is due after `attemptsMade` failures, or undefined when it would come after deliverBy. */
export function nextAttemptAt(policy: RetryPolicy, template: MailTemplate, attemptsMade: number, deliverBy: number, now = Date.now()): number | undefined {
  const at = now + retryDelayMs(policy, template, attemptsMade);
  return at < deliverBy ? at : undefined;
}

/** The job's deliverBy, or the template's default from now. */
export function deliverByOf(policy: RetryPolicy, job: Pick<MailJob, 'template' | 'deliverBy'>, now = Date.now()): Date {
  return job.deliverBy ?? new Date(now + (isCodeTemplate(job.template) ? policy.codeTtlMs : policy.noticeTtlMs));
}

/** A failure that retrying cannot fix (bad job, missing template param, 5xx SMTP reply): the queue gives up at once. */
export class PermanentMailError extends Error {
  override readonly name = 'PermanentMailError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Checks jobs on enqueue and again when a worker takes them from Redis (they may come from another version). */
export const mailJobSchema = z.object({
  to: z.array(emailAddressSchema).min(1).max(50),
  template: z.enum(MAIL_TEMPLATES),
  locale: z.enum(LOCALES),
  params: z.record(z.string(), z.string().max(2000)),
  deliverBy: z.coerce.date().optional(),
  otpId: z.string().uuid().optional(),
  tenantId: z.string().max(200).optional(),
});

export function parseMailJob(value: unknown): MailJob {
  const parsed = mailJobSchema.safeParse(value);
  if (!parsed.success) {
    // Only paths and messages: the params may hold an OTP.
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(job)'}: ${i.message}`).join('; ');
    throw new PermanentMailError(`invalid mail job: ${issues}`);
  }
  return parsed.data;
}
