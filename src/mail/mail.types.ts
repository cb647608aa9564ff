import { z } from 'zod';
import { LOCALES, type Locale } from '../i18n/index.js';
import { emailAddressSchema } from './email-address.js';

/**
 * Every mail the provider sends. Adding one = one entry here plus `templates/<name>.ja.txt` and
 * `templates/<name>.en.txt` (test/mail/mail.renderer.test.ts fails if a file is missing).
 */
export const MAIL_TEMPLATES = ['login-otp', 'account-locked', 'new-ip-login', 'activation', 'activation-completed', 'account-unlocked', 'recovery-used', 'device-verify', 'devices-changed', 'secret-question-changed', 'login-method-changed', 'activation-reissued', 'signed-out-everywhere'] as const;

/** One of MAIL_TEMPLATES. */
export type MailTemplate = (typeof MAIL_TEMPLATES)[number];

/**
 * One mail to one person's devices (all addresses go into one message). `params` fill the template's
 * `{{placeholders}}`; `login-otp` carries the OTP, so jobs are never logged whole.
 */
export interface MailJob {
  to: string[];
  template: MailTemplate;
  locale: Locale;
  params: Record<string, string>;
}

export interface MailQueue {
  /** Resolves once the job is accepted; delivery (with retries) happens later. Rejects on an invalid job. */
  enqueue(job: MailJob): Promise<void>;
  /** Stops accepting jobs and waits for the in-flight ones to be delivered or given up. */
  close(): Promise<void>;
}

export interface RenderedMail {
  subject: string;
  text: string;
  html: string;
}

/** Renders and delivers one job, once; retrying is the queue's business. */
export interface MailSender {
  send(job: MailJob): Promise<void>;
}

/** Same rule for BullMQ and the in-process queue: `attempts` tries, waiting `backoffMs * 2^(n-1)` after the n-th failure. */
export interface RetryPolicy {
  attempts: number;
  backoffMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { attempts: 5, backoffMs: 2000 };

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
