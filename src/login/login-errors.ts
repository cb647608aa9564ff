import { AppError } from '../http/errors.js';
import { temporaryLockMessage } from '../lockout/account-lock.js';

/** 認証に失敗しました: a wrong code (or password), or an unknown user ID. */
export class AuthFailedError extends AppError {
  constructor(backUrl?: string, messageKey = 'login:errors.auth_failed', params: Record<string, string | number> = {}) {
    super('auth_failed', 401, messageKey, params, backUrl);
  }
}

/**
 * The site asks for a stronger login method than this account can perform (e.g. a client certificate
 * the account has none of); another method is for the account area's method change, or the site.
 */
export class MethodUnavailableError extends AppError {
  constructor(method: string, backUrl?: string) {
    super('method_unavailable', 403, 'login:errors.method_unavailable', { method }, backUrl);
  }
}

/** The lock page's wording per factor whose wrong entries locked the account (the manual's text for the code). */
const LOCKED_BY: Partial<Record<string, string>> = { email_otp: 'login:errors.locked', password: 'login:errors.locked_password' };

/**
 * アカウントをロックしました. `cause`: the factor whose wrong entry locked the account just now; without
 * one (an account found locked) the page names no cause, as wrong passwords, codes or answers all lock.
 * `lockedUntil`: when a temporary lock lifts; its page says in about how long, instead of sending the
 * user to the support desk (null or absent: a permanent lock).
 */
export class AccountLockedError extends AppError {
  constructor(backUrl?: string, cause?: string, lockedUntil?: Date | null) {
    const [key, params] = temporaryLockMessage('login:errors', lockedUntil) ?? [(cause && LOCKED_BY[cause]) || 'login:errors.locked_any', {}];
    super('account_locked', 403, key, params, backUrl);
  }
}

/** ワンタイムパスワードが送信できませんでした (only when the deployment reveals unknown user IDs). */
export class OtpNotSentError extends AppError {
  constructor(backUrl?: string) {
    super('otp_not_sent', 400, 'login:errors.otp_not_sent', {}, backUrl);
  }
}

/** The account exists but has not been activated yet; the user is pointed to the activation URL. */
export class NotActivatedError extends AppError {
  constructor(backUrl?: string) {
    super('not_activated', 403, 'login:errors.not_activated', {}, backUrl);
  }
}
