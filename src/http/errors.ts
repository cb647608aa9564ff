/**
 * The one error hierarchy: a stable code, an HTTP status and an i18n message key. Routers throw
 * these; the error middleware renders them as a page (or JSON) in the user's language.
 */
export class AppError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    readonly messageKey: string,
    readonly params: Record<string, string | number> = {},
    /** Where the error page's "back" link leads, when there is a sensible place. */
    readonly backUrl?: string,
  ) {
    super(code);
    this.name = 'AppError';
  }
}

export class BadRequestError extends AppError {
  constructor(messageKey = 'common:errors.bad_request', params: Record<string, string | number> = {}, backUrl?: string) {
    super('bad_request', 400, messageKey, params, backUrl);
  }
}

export class CsrfError extends AppError {
  constructor() {
    super('csrf', 403, 'common:errors.csrf');
  }
}

export class NotFoundError extends AppError {
  constructor(messageKey = 'common:errors.not_found') {
    super('not_found', 404, messageKey);
  }
}

/** A method the path does not have (the router sets the Allow header). */
export class MethodNotAllowedError extends AppError {
  constructor(allowed = '') {
    super('method_not_allowed', 405, 'common:errors.method_not_allowed', { allowed });
  }
}

export class ForbiddenError extends AppError {
  constructor(messageKey = 'common:errors.forbidden') {
    super('forbidden', 403, messageKey);
  }
}

/** The login (interaction) the request belongs to is unknown or expired. */
export class SessionExpiredError extends AppError {
  constructor() {
    super('session_expired', 400, 'common:errors.session_expired');
  }
}

export class RateLimitedError extends AppError {
  constructor(readonly retryAfterSeconds: number, backUrl?: string) {
    super('too_many_requests', 429, 'common:errors.too_many_requests', { minutes: Math.max(1, Math.ceil(retryAfterSeconds / 60)) }, backUrl);
  }
}

/** A store the request needs (Redis) is unreachable: try again shortly; nothing is wrong with the request. */
export class ServiceUnavailableError extends AppError {
  constructor(readonly retryAfterSeconds: number, backUrl?: string) {
    super('service_unavailable', 503, 'common:errors.unavailable', {}, backUrl);
  }
}
