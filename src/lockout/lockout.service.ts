import type { AccountLifecycleService } from '../account/account-lifecycle.service.js';
import type { Contract } from '../config/index.js';
import type { Metrics } from '../http/metrics.js';
import type { Locale } from '../i18n/index.js';
import { formatEventTime } from '../history/event-time.js';
import type { MailJob } from '../mail/mail.types.js';
import type { AccountRepository } from '../persistence/account.repository.js';
import type { WebhookEvents } from '../webhooks/webhook-events.js';

/**
 * `lockedUntil`: when the lock lifts by itself (null: permanent). A lock landed by a parallel attempt
 * (`justLocked` false) was taken during this request, so its end is this moment plus the duration.
 */
export type FailureOutcome = { locked: false; failedAttempts: number } | { locked: true; justLocked: boolean; lockedUntil: Date | null };

/**
 * Consecutive-failure lockout shared by every factor. The counter moves in one atomic UPDATE, so N
 * parallel wrong attempts lock the account at exactly the threshold. The contract's `lockout` says
 * how many failures lock and for how long: a temporary lock lifts by itself (and the count starts
 * again), a permanent one only by an administrator. The attempt that locks ends the account's
 * sessions and tokens here, whichever flow made it.
 */
export class LockoutService {
  constructor(
    private readonly accounts: AccountRepository,
    private readonly lifecycle: Pick<AccountLifecycleService, 'endAccess'>,
    private readonly metrics?: Pick<Metrics, 'lockout'>,
    private readonly webhooks?: Pick<WebhookEvents, 'emitForAccount'>,
  ) {}

  async registerFailure(accountId: string, lockout: Contract['lockout']): Promise<FailureOutcome> {
    const minutes = lockout.duration_minutes;
    const r = await this.accounts.registerFailure(accountId, lockout.threshold, minutes);
    if (!r) return { locked: true, justLocked: false, lockedUntil: minutes === null ? null : new Date(Date.now() + minutes * 60_000) };
    if (!r.locked) return { locked: false, failedAttempts: r.failedAttempts };
    this.metrics?.lockout();
    await this.lifecycle.endAccess(accountId, 'locked');
    await this.webhooks?.emitForAccount(accountId, 'account.locked', { lockedUntil: r.lockedUntil?.toISOString() ?? null, failedAttempts: r.failedAttempts });
    return { locked: true, justLocked: true, lockedUntil: r.lockedUntil };
  }

  unlock(tenantId: string, userId: string) {
    return this.accounts.unlock(tenantId, userId);
  }
}

/**
 * The lockout notice (アカウントロックのお知らせ) for the account's addresses: a temporary lock's says
 * when it lifts, a permanent one's to ask the support desk.
 */
export function lockNotice(
  to: string[],
  input: { userId: string; clientName: string; locale: Locale; lockedUntil: Date | null; tenantId: string },
): MailJob {
  const { userId, clientName, locale, lockedUntil, tenantId } = input;
  return lockedUntil
    ? { to, template: 'account-locked-temporary', locale, params: { userId, clientName, unlockAt: formatEventTime(lockedUntil, locale) }, tenantId }
    : { to, template: 'account-locked', locale, params: { userId, clientName }, tenantId };
}
