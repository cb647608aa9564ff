import type { AccountLifecycleService } from '../account/account-lifecycle.service.js';
import type { Metrics } from '../http/metrics.js';
import type { AccountRepository } from '../persistence/account.repository.js';

export type FailureOutcome = { locked: false; failedAttempts: number } | { locked: true; justLocked: boolean };

/**
 * Consecutive-failure lockout shared by every factor. The counter moves in one atomic UPDATE, so N
 * parallel wrong attempts lock the account at exactly the threshold; only an administrator unlocks.
 * The attempt that locks ends the account's sessions and tokens here, whichever flow made it.
 */
export class LockoutService {
  constructor(
    private readonly accounts: AccountRepository,
    private readonly lifecycle: Pick<AccountLifecycleService, 'endAccess'>,
    private readonly metrics?: Pick<Metrics, 'lockout'>,
  ) {}

  async registerFailure(accountId: string, threshold: number): Promise<FailureOutcome> {
    const r = await this.accounts.registerFailure(accountId, threshold);
    if (!r) return { locked: true, justLocked: false };
    if (!r.locked) return { locked: false, failedAttempts: r.failedAttempts };
    this.metrics?.lockout();
    await this.lifecycle.endAccess(accountId, 'locked');
    return { locked: true, justLocked: true };
  }

  unlock(tenantId: string, userId: string) {
    return this.accounts.unlock(tenantId, userId);
  }
}
