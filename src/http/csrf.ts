import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import { CsrfError } from './errors.js';

const COOKIE = 'csrf';
export const CSRF_FIELD = '_csrf';
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Signed double-submit CSRF protection: a random token in a signed, HttpOnly, SameSite cookie, and
 * the same token in every form. A cross-site page can neither read the cookie nor forge its signature.
 * Paths under `exempt` (oidc-provider's own endpoints, JSON APIs with bearer tokens) are skipped.
 */
export function csrf(opts: { exempt: (path: string) => boolean; secure: boolean }) {
  return async (ctx: Context, next: Next) => {
    if (opts.exempt(ctx.path)) return next();
    let token = ctx.cookies.get(COOKIE, { signed: true });
    if (!token || !/^[A-Za-z0-9_-]{43}$/.test(token)) {
      token = randomBytes(32).toString('base64url');
      ctx.cookies.set(COOKIE, token, { signed: true, httpOnly: true, sameSite: 'lax', secure: opts.secure && ctx.secure, overwrite: true });
      ctx.state.csrfFresh = true;
    }
    ctx.state.csrfToken = token;
    if (!SAFE.has(ctx.method)) {
      const body = (ctx.request as { body?: unknown }).body;
      const sent = body && typeof body === 'object' ? (body as Record<string, unknown>)[CSRF_FIELD] : undefined;
      if (ctx.state.csrfFresh || typeof sent !== 'string' || sent.length !== token.length || !timingSafeEqual(Buffer.from(sent), Buffer.from(token)))
        throw new CsrfError();
    }
    return next();
  };
}
