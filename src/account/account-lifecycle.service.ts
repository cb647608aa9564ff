import type { Logger } from '../logger.js';
import type { BackchannelOutcome, SiteSignIn } from '../oidc/backchannel.js';
import type { SessionRepository, StoredSession } from '../persistence/session.repository.js';

/** Account events after which nothing signed in before may stay signed in (OWASP ASVS 3.3). */
export type AccessEndReason = 'locked' | 'reactivated' | 'password_reset' | 'method_changed' | 'deleted' | 'staff_signed_out';

/** Tells relying sites (back-channel logout) that sessions ended; src/oidc/backchannel.ts. */
export interface SiteNotifier {
  notify(accountId: string, signIns: SiteSignIn[]): Promise<BackchannelOutcome[]>;
}

export const signInsOf = (sessions: StoredSession[]): SiteSignIn[] =>
  sessions.flatMap((s) => Object.entries(s.authorizations).map(([clientId, a]) => ({ clientId, sid: a.sid })));

/**
 * The one place that ends an account's access when its standing changes: a lock, a re-activation, a
 * password reset, a login-method change or a delete end every provider session of the account, revoke
 * its grants with their codes and tokens, and tell the sites registered for back-channel logout.
 * Lockout, activation, recovery, the method change and account deletion all call it, so no path can
 * forget it; oidc-provider's findAccount refusing locked and pending accounts is the second line.
 */
export class AccountLifecycleService {
  private notifier?: SiteNotifier;

  constructor(
    private readonly deps: {
      sessions: SessionRepository;
      logger?: Pick<Logger, 'warn' | 'info'>;
      /** Told first, so nothing this instance holds for the account (LoginHandoff) outlives its access. */
      onEnd?: (accountId: string) => void;
    },
  ) {}

  /** The provider exists after the domain services (app, CLI): sites are told once it is attached. */
  useNotifier(notifier: SiteNotifier): void {
    this.notifier = notifier;
  }

  /**
   * Ends the account's sessions, grants and tokens. `keepSessionUid` spares the browser that has just
   * proved who it is (a change made in the account area), so it can finish what it started.
   */
  async endAccess(accountId: string, reason: AccessEndReason, opts: { keepSessionUid?: string } = {}): Promise<{ sessions: number }> {
    this.deps.onEnd?.(accountId);
    const { sessions, deleted } = await this.deps.sessions.deleteAllForAccount(accountId, opts);
    if (deleted > 0) this.deps.logger?.info({ accountId, reason, sessions: sessions.length, rows: deleted }, 'account access ended');
    await this.tellSites(accountId, sessions);
    return { sessions: sessions.length };
  }

  // After the rows are gone, so a site that checks back finds the session ended.
  async tellSites(accountId: string, sessions: StoredSession[]): Promise<void> {
    if (!this.notifier || sessions.length === 0) return;
    const outcomes = await this.notifier.notify(accountId, signInsOf(sessions));
    for (const o of outcomes) if (!o.ok) this.deps.logger?.warn({ clientId: o.clientId, err: o.error }, 'back-channel logout failed');
  }
}
