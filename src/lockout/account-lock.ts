/** What an account's lock columns say. */
export interface LockState {
  lockedAt: Date | null;
  /** When a temporary lock lifts by itself; null: permanent (while lockedAt is set). */
  lockedUntil: Date | null;
}

/**
 * The one rule of whether an account is locked: a lock was taken and, if temporary, has not lifted
 * yet. An expired temporary lock is no lock anywhere (login, sessions, tokens, account area,
 * recovery, activation, the management API); its columns stay until the next failure or success
 * clears them. The same rule in SQL is `LOCK_IN_FORCE` (src/persistence/account.repository.ts).
 */
export function isLocked(account: LockState, now: Date = new Date()): boolean {
  return account.lockedAt !== null && (account.lockedUntil === null || account.lockedUntil.getTime() > now.getTime());
}

/**
 * The message of a temporary lock's page, under an i18n prefix (`<prefix>.locked_temporary`, or
 * `…_hours` past two hours), with the remaining time rounded up (at least 1) as its plural `count`.
 * Null for a permanent lock: its page keeps the manual's wording (ask the support desk).
 */
export function temporaryLockMessage(prefix: string, lockedUntil: Date | null | undefined, now: Date = new Date()): [string, { count: number }] | null {
  if (!lockedUntil) return null;
  const minutes = Math.max(1, Math.ceil((lockedUntil.getTime() - now.getTime()) / 60_000));
  return minutes > 120 ? [`${prefix}.locked_temporary_hours`, { count: Math.ceil(minutes / 60) }] : [`${prefix}.locked_temporary`, { count: minutes }];
}
