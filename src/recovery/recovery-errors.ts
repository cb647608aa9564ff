import { AppError } from '../http/errors.js';
import { temporaryLockMessage } from '../lockout/account-lock.js';

/**
 * A problem with one field of the current step (missing, malformed or wrong). The router shows the
 * same form again with the message next to the field instead of an error page.
 */
export class RecoveryFieldError extends AppError {
  constructor(
    readonly field: string,
    status: number,
    messageKey: string,
    params: Record<string, string | number> = {},
  ) {
    super(status === 401 ? 'auth_failed' : 'invalid_input', status, messageKey, params);
  }
}

/** A POST for a step the flow is not at (skipped, replayed or raced): the server keeps the order. */
export class RecoveryStepError extends AppError {
  constructor(backUrl?: string) {
    super('wrong_step', 409, 'recovery:errors.wrong_step', {}, backUrl);
  }
}

/** Repeated wrong codes or answers locked the account (or it was locked already). */
export class RecoveryLockedError extends AppError {
  /** `lockedUntil`: when a temporary lock lifts (the page says in about how long); null or absent: permanent. */
  constructor(backUrl?: string, lockedUntil?: Date | null) {
    const [key, params] = temporaryLockMessage('recovery:errors', lockedUntil) ?? ['recovery:errors.locked', {}];
    super('account_locked', 403, key, params, backUrl);
  }
}

/** The account has no usable secret question (or lost its passkey where the contract has no passkey recovery): only the site's support desk can help. */
export class RecoveryUnavailableError extends AppError {
  constructor(backUrl?: string, messageKey = 'recovery:errors.no_question') {
    super('recovery_unavailable', 409, messageKey, {}, backUrl);
  }
}
