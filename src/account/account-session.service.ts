import type { MailQueue } from '../mail/mail.types.js';
import type { Locale } from '../i18n/index.js';
import { accountConsoleClientId, type LoginMethod, type TenantDirectory } from '../config/index.js';
import type { Logger } from '../logger.js';
import { methodOfAcr } from '../login/login-methods.js';
import type { BackchannelOutcome, SiteSignIn } from '../oidc/backchannel.js';
import type { SessionRepository, StoredSession } from '../persistence/session.repository.js';
import type { AccountEventService } from './account-event.service.js';
import { signInsOf } from './account-lifecycle.service.js';

/** One site a session signed in to, for the page. */
export interface SessionSite {
  clientId: string;
  /** The client's name from config; undefined for the account console (the page names it). */
  name?: string;
  console: boolean;
}

/** One active provider session of the account, as the sessions page shows it. */
export interface AccountSessionView {
  uid: string;
  /** The session this browser is using. */
  current: boolean;
  loginAt?: Date;
  expiresAt?: Date;
  /** The login method its acr names, when it is one of ours. */
  method?: LoginMethod;
  amr: string[];
  sites: SessionSite[];
}

/** Who is asking: the signed-in account and the session of the browser asking. */
export interface SessionActor {
  accountId: string;
  tenantId: string;
  currentSessionUid: string;
  sourceIp: string | null;
}

export type SignOutResult = 'signed_out' | 'not_found' | 'current';

/**
 * The account's provider sessions ("where am I signed in"): listing them, signing one out, and
 * signing out everywhere. Ending sessions also revokes the sites' grants and tokens, tells sites with
 * a back-channel logout URI, and is recorded as an account event.
 */
export class AccountSessionService {
  constructor(
    private readonly deps: {
      sessions: SessionRepository;
      backchannel: { notify(accountId: string, signIns: SiteSignIn[]): Promise<BackchannelOutcome[]> };
      events: AccountEventService;
      tenants: TenantDirectory;
      logger?: Pick<Logger, 'warn'>;
      /** Tells the account's proven addresses after "sign out everywhere". */
      mail?: MailQueue;
    },
  ) {}

  async list(actor: Pick<SessionActor, 'accountId' | 'tenantId' | 'currentSessionUid'>): Promise<AccountSessionView[]> {
    const consoleId = accountConsoleClientId(actor.tenantId);
    const sessions = await this.deps.sessions.listForAccount(actor.accountId);
    const views = sessions.map(
      (s): AccountSessionView => ({
        uid: s.uid,
        current: s.uid === actor.currentSessionUid,
        loginAt: s.loginTs ? new Date(s.loginTs * 1000) : undefined,
        expiresAt: s.expiresAt ?? undefined,
        method: methodOfAcr(s.acr),
        amr: s.amr ?? [],
        sites: Object.keys(s.authorizations).map((clientId) =>
          clientId === consoleId ? { clientId, console: true } : { clientId, console: false, name: this.deps.tenants.client(clientId)?.client.name ?? clientId },
        ),
      }),
    );
    // This browser first, then the most recent sign-ins.
    return views.sort((a, b) => Number(b.current) - Number(a.current));
  }

  /** Signs out one other session of the account (this browser's own goes through ログアウト). */
  async signOut(actor: SessionActor, uid: string): Promise<SignOutResult> {
    if (uid === actor.currentSessionUid) return 'current';
    const ended = await this.deps.sessions.deleteSession(actor.accountId, uid);
    if (!ended) return 'not_found';
    await this.deps.events.record({ tenantId: actor.tenantId, accountId: actor.accountId, type: 'session_signed_out', actor: 'user', sourceIp: actor.sourceIp });
    await this.tellSites(actor.accountId, [ended]);
    return 'signed_out';
  }

  /** Ends every session of the account, this browser's included, and every grant and token. */
  async signOutEverywhere(actor: SessionActor, notice?: { to: string[]; userId: string; locale: Locale }): Promise<{ sessions: number }> {
    const { sessions } = await this.deps.sessions.deleteAllForAccount(actor.accountId);
    await this.deps.events.record({
      tenantId: actor.tenantId,
      accountId: actor.accountId,
      type: 'signed_out_everywhere',
      actor: 'user',
      sourceIp: actor.sourceIp,
      detail: { sessions: sessions.length },
    });
    await this.tellSites(actor.accountId, sessions);
    if (notice?.to.length && this.deps.mail)
      await this.deps.mail.enqueue({ to: notice.to, template: 'signed-out-everywhere', locale: notice.locale, params: { userId: notice.userId, ip: actor.sourceIp ?? '-' } });
    return { sessions: sessions.length };
  }

  // After the rows are gone, so a site that checks back finds the session ended.
  private async tellSites(accountId: string, sessions: StoredSession[]) {
    const outcomes = await this.deps.backchannel.notify(accountId, signInsOf(sessions));
    for (const o of outcomes) if (!o.ok) this.deps.logger?.warn({ clientId: o.clientId, err: o.error }, 'back-channel logout failed');
  }
}
