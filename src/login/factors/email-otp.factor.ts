import { BadRequestError } from '../../http/errors.js';
import type { LimitCheck } from '../../http/rate-limit.js';
import type { Locale } from '../../i18n/index.js';
import type { Logger } from '../../logger.js';
import { enqueueAfterResponse } from '../../mail/mail.after-response.js';
import { isEmailAddress } from '../../mail/email-address.js';
import type { MailJob, MailQueue, StagedMail } from '../../mail/mail.types.js';
import type { IssuedCode, OtpService } from '../../otp/otp.service.js';
import type { AccountWithDevices } from '../../persistence/account.repository.js';
import type { Factor, FactorContext, FactorOutcome } from '../factor.js';

/** Accepts what people type for a code: full-width digits, spaces and hyphens are tolerated. */
export function normalizeOtp(raw: unknown): string | undefined {
  if (typeof raw !== 'string') return undefined;
  return raw.normalize('NFKC').replace(/[\s-]/g, '');
}

/**
 * Proven device addresses only: an address not yet proven never receives a login code. An address
 * stored before the shared address rule existed, which the mail layer would refuse, is left out.
 */
export function deliverableAddresses(account: AccountWithDevices): string[] {
  return [...new Set(account.devices.filter((d) => d.verifiedAt && isEmailAddress(d.email)).map((d) => d.email))];
}

/** How long after the response a code's stored mail starts on its way (see issueMailedCode). */
const DELIVERY_DELAY_MS = 2;

/** Where the mail prepared for an ID without one would go (it is never stored or sent). */
const DECOY_RECIPIENTS = ['nobody@example.com'];

/**
 * Issues a flow's code (login or recovery) with its mail to `to` (the login code mail: a code for
 * getting into this site, which says so for recovery too). The mail is stored by the code's
 * own statement (MailQueue.stage, the outbox), so the code page is never answered for a mail that is
 * not stored, and it is sent (with BullMQ, handed to Redis) after the response. With no addresses (an
 * unknown, pending or locked ID) the same mail is prepared and dropped: same work, same timing. When
 * the queue stages nothing (it is closing), the mail is queued after the response; if that fails, the
 * code is marked undelivered and its page says so at the next step, as for a given-up mail.
 */
export async function issueMailedCode(
  deps: { otp: OtpService; mail: MailQueue; logger: Pick<Logger, 'error'> },
  code: { flowId: string; accountId: string | null; purpose: string; ttlSeconds: number },
  mail: { to: string[]; userId: string; locale: Locale; clientName: string; tenantId: string },
): Promise<IssuedCode> {
  const { to } = mail;
  const jobOf = (issued: IssuedCode, recipients: string[]): MailJob => ({
    to: recipients,
    template: 'login-otp',
    locale: mail.locale,
    params: { userId: mail.userId, otp: issued.code, expiresMinutes: String(Math.round(code.ttlSeconds / 60)), clientName: mail.clientName },
    // Tried until the code expires; if it never goes out, the code row says so (`undelivered`).
    deliverBy: issued.expiresAt,
    otpId: issued.id,
    tenantId: mail.tenantId,
  });
  let job: MailJob | undefined;
  let staged = undefined as StagedMail | undefined;
  const issued = await deps.otp.issueForFlow(code.flowId, code.accountId, code.purpose, code.ttlSeconds, (fresh) => {
    const prepared = jobOf(fresh, to.length ? to : DECOY_RECIPIENTS);
    const candidate = deps.mail.stage?.(prepared);
    if (!to.length) return undefined;
    job = prepared;
    staged = candidate;
    return candidate?.row;
  });
  if (staged) {
    const mail = staged;
    // Delivery starts once the response has left, and a moment later, so that its work (about 1 ms
    // of CPU) does not compete with whatever reads that answer on the same cores (a proxy in front
    // of the provider): the answer's timing must not tell a live ID.
    setTimeout(() => mail.stored(), DELIVERY_DELAY_MS);
  } else if (job) {
    enqueueAfterResponse(deps.mail, job, deps.logger, () => deps.otp.markDeliveryFailed(issued.id));
  }
  return issued;
}

/** The manual's one-time password by e-mail, sent to every proven device address of the account. */
export class EmailOtpFactor implements Factor {
  readonly name = 'email_otp' as const;
  readonly amr = ['otp'];

  constructor(
    private readonly deps: {
      otp: OtpService;
      mail: MailQueue;
      otpLength: number;
      otpTtlSeconds: number;
      logger: Pick<Logger, 'error'>;
    },
  ) {}

  isConfiguredFor(account: AccountWithDevices): boolean {
    return deliverableAddresses(account).length > 0;
  }

  /**
   * Issues a code and mails it. The mail limit is keyed by the user ID as typed, known or not, so it
   * neither mail-bombs a user nor tells known IDs from unknown ones; unknown, pending and locked
   * accounts get a code stored like any other (same work, same timing) but no mail. A live account's
   * mail is stored with its code, by the same statement (MailQueue.stage, the outbox), before the code
   * page is shown, and sent (or, with BullMQ, handed to Redis) after the response.
   */
  enterLimits(ctx: FactorContext): LimitCheck[] {
    return [{ kind: 'otp_mail', key: `${ctx.tenant.id}:${ctx.flow.submittedUserId ?? ''}` }];
  }

  async enter(ctx: FactorContext): Promise<void> {
    const to = ctx.account && ctx.live ? deliverableAddresses(ctx.account) : [];
    await issueMailedCode(
      this.deps,
      { flowId: ctx.flow.id, accountId: ctx.account?.id ?? null, purpose: 'login', ttlSeconds: this.deps.otpTtlSeconds },
      { to, userId: ctx.account?.userId ?? ctx.flow.submittedUserId ?? '', locale: ctx.locale, clientName: ctx.client.name, tenantId: ctx.tenant.id },
    );
  }

  /** Whether the mail with the current code was given up (the page then says it could not be sent). */
  undelivered(ctx: FactorContext): Promise<boolean> {
    return this.deps.otp.deliveryFailed(ctx.flow.id, 'login', ctx.latestCode);
  }

  /** Seconds to wait before another code may be sent (0: now). */
  resendWait(ctx: FactorContext): Promise<number> {
    return this.deps.otp.resendWait(ctx.flow.id, 'login', ctx.latestCode);
  }

  render(ctx: FactorContext) {
    return { view: 'login/otp', locals: { userId: ctx.flow.submittedUserId, otpLength: this.deps.otpLength } };
  }

  async submit(ctx: FactorContext, input: Record<string, unknown>): Promise<FactorOutcome> {
    const code = normalizeOtp(input.otp);
    if (!code) throw new BadRequestError('login:errors.otp_required', {}, ctx.flowUrl);
    if (!/^\d{6,12}$/.test(code)) throw new BadRequestError('login:errors.otp_format', { length: this.deps.otpLength }, ctx.flowUrl);
    const { check, codeId } = await this.deps.otp.checkForFlow(ctx.flow.id, code, 'login', ctx.latestCode);
    switch (check) {
      case 'ok':
        return { kind: 'passed', ...(codeId ? { codeId } : {}) };
      case 'expired':
        return { kind: 'rejected', result: 'expired_otp', countsAsFailure: false, messageKey: 'login:errors.otp_expired' };
      case 'used':
        // Consumed by this flow's own success (a double click), or retired (e.g. its device deleted).
        return { kind: 'rejected', result: 'used_otp', countsAsFailure: true, messageKey: 'login:errors.auth_failed', maybeDuplicate: true };
      case 'wrong':
        return { kind: 'rejected', result: 'wrong_otp', countsAsFailure: true, messageKey: 'login:errors.auth_failed' };
    }
  }
}
