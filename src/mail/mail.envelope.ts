import { z } from 'zod';
import { sealedBox } from '../http/sealed-box.js';
import { LOCALES } from '../i18n/index.js';
import { MAIL_TEMPLATES, PermanentMailError, parseMailJob, type MailJob, type MailTemplate } from './mail.types.js';

/**
 * A mail job as it rests in Redis or the outbox: what operators may see (template, recipient count,
 * masked addresses, deadline) in the clear, and the rest (addresses, locale, params with any OTP)
 * sealed with AES-256-GCM, so a copy of Redis or the database does not reveal a live code.
 */
export interface MailEnvelope {
  v: 1;
  template: MailTemplate;
  tenantId: string | null;
  otpId: string | null;
  recipients: number;
  maskedTo: string[];
  /** Epoch milliseconds. */
  deliverBy: number;
  payload: string;
}

const envelopeSchema = z.object({
  v: z.literal(1),
  template: z.enum(MAIL_TEMPLATES),
  tenantId: z.string().nullable(),
  otpId: z.string().nullable(),
  recipients: z.number().int(),
  maskedTo: z.array(z.string()),
  deliverBy: z.number(),
  payload: z.string(),
});

const sealedSchema = z.object({ to: z.array(z.string()), locale: z.enum(LOCALES), params: z.record(z.string(), z.string()) });

/** `taro@example.jp` → `ta***@example.jp`: enough for an operator to tell messages apart. */
export function maskAddress(address: string): string {
  const at = address.lastIndexOf('@');
  const local = at < 0 ? address : address.slice(0, at);
  return `${local.slice(0, Math.min(2, Math.max(1, local.length - 1)))}***${at < 0 ? '' : address.slice(at)}`;
}

export function isMailEnvelope(value: unknown): value is MailEnvelope {
  return envelopeSchema.safeParse(value).success;
}

export type MailSealer = ReturnType<typeof mailSealer>;

/** Keys derive from the cookie keys (HKDF, own purpose); any of them opens, so rotation keeps queued mail. */
export function mailSealer(keys: string[]) {
  const box = sealedBox(keys, 'mail-payload');
  return {
    seal(job: MailJob, deliverBy: Date): MailEnvelope {
      return {
        v: 1,
        template: job.template,
        tenantId: job.tenantId ?? null,
        otpId: job.otpId ?? null,
        recipients: job.to.length,
        maskedTo: job.to.map(maskAddress),
        deliverBy: deliverBy.getTime(),
        payload: box.seal({ to: job.to, locale: job.locale, params: job.params }),
      };
    },
    /** The job again; a PermanentMailError when the payload cannot be opened (another key, damaged). */
    open(value: unknown): MailJob {
      const envelope = envelopeSchema.safeParse(value);
      if (!envelope.success) throw new PermanentMailError('invalid mail envelope');
      const e = envelope.data;
      const inner = sealedSchema.safeParse(box.open(e.payload));
      if (!inner.success) throw new PermanentMailError('mail payload cannot be opened (unknown key or damaged)');
      return parseMailJob({
        ...inner.data,
        template: e.template,
        deliverBy: new Date(e.deliverBy),
        ...(e.otpId ? { otpId: e.otpId } : {}),
        ...(e.tenantId ? { tenantId: e.tenantId } : {}),
      });
    },
  };
}
