import type { Context, Next } from 'koa';
import type { Logger } from '../logger.js';
import { DATABASE_RETRY_AFTER_SECONDS, isDatabaseUnavailable } from '../persistence/database-unavailable.js';
import { AppError, MethodNotAllowedError, NotFoundError, RateLimitedError, ServiceUnavailableError } from './errors.js';
import { TooManyRequestsError } from './rate-limit.js';
import { requestIdOf } from './request-id.js';

function toAppError(err: unknown): AppError | undefined {
  if (err instanceof AppError) return err;
  if (err instanceof TooManyRequestsError) return new RateLimitedError(err.retryAfterSeconds);
  const e = err as { status?: number; statusCode?: number; expose?: boolean; type?: string };
  const status = e?.status ?? e?.statusCode;
  // Errors from body parsing and Koa itself (413 too large, 415, 400 malformed) are the client's.
  if (status === 413) return new AppError('payload_too_large', 413, 'common:errors.bad_request');
  if (status === 404) return new NotFoundError();
  if (typeof status === 'number' && status >= 400 && status < 500) return new AppError('bad_request', status, 'common:errors.bad_request');
  return undefined;
}

/**
 * Renders an error its own way for the paths it owns (e.g. an API's RFC 9457 problem+json); returns
 * false to leave the error to the default rendering. `err` is what was thrown, before translation.
 */
export type ErrorRenderer = (ctx: Context, error: AppError, err: unknown) => boolean;

/**
 * Renders every error as a page in the user's language (or JSON for API callers): client mistakes
 * keep their 4xx; a database that cannot answer is a 503 (try again shortly); anything else is logged
 * and shown as a plain 500 without details.
 */
export function errorHandler(logger: Logger, renderers: ErrorRenderer[] = []) {
  return async (ctx: Context, next: Next) => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) throw new NotFoundError();
      // The routers' allowedMethods() answer a method a path lacks with a bare 405 (501 for methods no
      // route has); both become a rendered 405, keeping the Allow header they set.
      if ((ctx.status === 405 || ctx.status === 501) && ctx.body == null) throw new MethodNotAllowedError(ctx.response.get('allow'));
    } catch (err) {
      let appError = toAppError(err);
      if (!appError && isDatabaseUnavailable(err)) {
        // Not the request's fault and not a bug: "try again shortly", as for a Redis outage.
        logger.error({ err: err instanceof Error ? err.message : String(err), path: ctx.path, method: ctx.method, requestId: requestIdOf(ctx) }, 'database unavailable');
        appError = new ServiceUnavailableError(DATABASE_RETRY_AFTER_SECONDS);
      }
      if (!appError) {
        logger.error({ err, path: ctx.path, method: ctx.method, requestId: requestIdOf(ctx) }, 'unhandled error');
        appError = new AppError('internal', 500, 'common:errors.internal');
      }
      ctx.status = appError.status;
      // Whatever the failed handler meant to answer (a redirect, e.g. when its writes could not be
      // stored at the end of the request) is not the answer now.
      ctx.remove('Location');
      if (appError instanceof RateLimitedError || appError instanceof ServiceUnavailableError) ctx.set('Retry-After', String(appError.retryAfterSeconds));
      const rendered = appError;
      const requestId = requestIdOf(ctx);
      if (renderers.some((render) => render(ctx, rendered, err))) {
        // The id a user or site quotes in a report, to find the request's log lines.
        if (requestId && ctx.body && typeof ctx.body === 'object' && !Buffer.isBuffer(ctx.body)) ctx.body = { ...(ctx.body as object), request_id: requestId };
        return;
      }
      const wantsJson = ctx.path.startsWith('/api/') || (ctx.accepts('html', 'json') === 'json' && !ctx.get('accept').includes('html'));
      const t = ctx.state.t as ((key: string, params?: object) => string) | undefined;
      const message = t ? t(appError.messageKey, appError.params) : appError.code;
      if (wantsJson || typeof ctx.render !== 'function') {
        ctx.body = { error: appError.code, message, ...(requestId ? { request_id: requestId } : {}) };
        return;
      }
      await ctx.render('error', { messageKey: appError.messageKey, messageParams: appError.params, backUrl: appError.backUrl, errorCode: appError.code });
    }
  };
}
