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

/** Whole minutes, rounded up and at least 1, until a temporary lock lifts at `lockedUntil`; null for a permanent lock. */
export function minutesUntilUnlock(lockedUntil: Date | null, now: Date = new Date()): number | null {
  if (!lockedUntil) return null;
  return Math.max(1, Math.ceil((lockedUntil.getTime() - now.getTime()) / 60_000));
}
