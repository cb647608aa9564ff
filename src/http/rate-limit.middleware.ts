import type { Context, Middleware } from 'koa';
import { clientIp } from './client-ip.js';
import { RateLimitedError } from './errors.js';
import { TooManyRequestsError, type RateLimits } from './rate-limit.js';

/**
 * Counts one step of a form flow (login, activation, recovery) against the caller's IP; refused, it
 * throws the 429 page with a way back to `backUrl`.
 */
export async function limitIp(limits: RateLimits, ctx: Context, backUrl: string): Promise<void> {
  const d = await limits.consume('ip', clientIp(ctx) ?? 'unknown');
  if (!d.allowed) throw new RateLimitedError(d.retryAfterSeconds, backUrl);
}

/**
 * Counts every request against its source IP. When refused, answers 429 with Retry-After and throws
 * TooManyRequestsError for the error-handling middleware to render (the error also carries the
 * header, because Koa's default handler clears headers set before the throw).
 */
export function rateLimitByIp(limits: RateLimits, getIp: (ctx: Context) => string): Middleware {
  return async (ctx, next) => {
    // An empty IP would put every such request in one shared bucket under a misleading key.
    const ip = getIp(ctx) || 'unknown';
    const decision = await limits.consume('ip', ip);
    if (!decision.allowed) {
      ctx.status = 429;
      ctx.set('Retry-After', String(decision.retryAfterSeconds));
      throw new TooManyRequestsError(decision.retryAfterSeconds);
    }
    await next();
  };
}
