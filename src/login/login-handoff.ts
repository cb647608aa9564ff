import type { AccountWithDevices } from '../persistence/account.repository.js';
import { setBounded } from '../bounded-map.js';

/** How long a completed login's account is kept for its redirect and code exchange. */
const TTL_MS = 30_000;
/** Reads it serves: the authorization's resume and the code exchange of the same login. */
const USES = 2;
const MAX_ENTRIES = 10_000;

/**
 * The account of a login that has just completed on this instance, as the completion left it, handed
 * to oidc-provider's findAccount for the two requests that follow at once (the authorization resuming
 * and the client exchanging its code), instead of reading it again for each. Only those two kinds of
 * request use it, each entry at most twice and for 30 s; every other findAccount (userinfo, refresh,
 * introspection, silent sign-in) reads the database. Ending an account's access (lock, delete, reset)
 * forgets its entry here, and removes the session, grant and code that these requests need anyway.
 */
export class LoginHandoff {
  private readonly entries = new Map<string, { account: AccountWithDevices; until: number; uses: number }>();

  put(account: AccountWithDevices): void {
    this.entries.delete(account.id);
    if (this.entries.size >= MAX_ENTRIES) this.prune();
    // Still full of live entries (a flood of logins): the oldest goes.
    setBounded(this.entries, account.id, { account, until: Date.now() + TTL_MS, uses: USES }, MAX_ENTRIES);
  }

  take(accountId: string): AccountWithDevices | undefined {
    const entry = this.entries.get(accountId);
    if (!entry) return undefined;
    if (entry.until <= Date.now() || --entry.uses <= 0) this.entries.delete(accountId);
    return entry.until > Date.now() ? entry.account : undefined;
  }

  forget(accountId: string): void {
    this.entries.delete(accountId);
  }

  private prune(): void {
    const now = Date.now();
    for (const [id, entry] of this.entries) if (entry.until <= now) this.entries.delete(id);
  }
}
