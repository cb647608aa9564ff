import { randomFillSync } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { Logger } from '../logger.js';
import { clientIp } from './client-ip.js';
import type { Metrics } from './metrics.js';

export const REQUEST_ID_HEADER = 'X-Request-Id';

/** An incoming id is kept only when it is a plain token: it ends up in logs and on pages. */
const SANE_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** Random bytes for request ids, drawn 4 KiB at a time: one `randomBytes` call per request cost more than the rest of this middleware. */
const ID_BYTES = 12;
const idPool = Buffer.alloc(ID_BYTES * 341);
let idOffset = idPool.length;

export function newRequestId(): string {
  if (idOffset + ID_BYTES > idPool.length) {
    randomFillSync(idPool);
    idOffset = 0;
  }
  idOffset += ID_BYTES;
  return idPool.toString('base64url', idOffset - ID_BYTES, idOffset);
}

/** The id of the current request (set by `requestContext`). */
export function requestIdOf(ctx: Context): string | undefined {
  const id: unknown = ctx.state.requestId;
  return typeof id === 'string' ? id : undefined;
}

/**
 * The label of a request in metrics and logs: the matched route's path template (our routers and
 * oidc-provider's both set `_matchedRoute`), oidc-provider's route name where it has one; never the
 * raw URL, which would carry ids.
 */
export function routeOf(ctx: Context): string {
  const c = ctx as Context & { _matchedRoute?: unknown; routerName?: unknown; oidc?: unknown };
  if (c.oidc && typeof c.routerName === 'string' && c.routerName) return c.routerName;
  if (typeof c._matchedRoute === 'string') return c._matchedRoute;
  if (ctx.path.startsWith('/static/')) return '/static';
  if (ctx.path === '/metrics') return '/metrics';
  return 'unmatched';
}

const quiet = (path: string) => path === '/metrics' || path === '/health' || path.startsWith('/health/');

/**
 * Outermost middleware: gives every request an id (a sane incoming `X-Request-Id`, else a random
 * one), returns it in `X-Request-Id`, keeps it in `ctx.state.requestId` for error pages and logs,
 * and writes one log line and one histogram observation per request. Probes and scrapes log at debug.
 */
export function requestContext(opts: { logger: Logger; metrics: Metrics }) {
  return async (ctx: Context, next: Next) => {
    const started = process.hrtime.bigint();
    const incoming = ctx.get(REQUEST_ID_HEADER);
    const requestId = SANE_ID.test(incoming) ? incoming : newRequestId();
    ctx.state.requestId = requestId;
    ctx.set(REQUEST_ID_HEADER, requestId);
    let status: number | undefined;
    try {
      await next();
    } catch (err) {
      // Errors reaching this far are answered by Koa's own handler (500 unless the error says otherwise).
      const e = err as { status?: unknown; expose?: unknown };
      status = typeof e?.status === 'number' && e.status >= 400 && e.status < 600 ? e.status : 500;
      throw err;
    } finally {
      status ??= ctx.status;
      if (!ctx.headerSent) ctx.set(REQUEST_ID_HEADER, requestId);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = routeOf(ctx);
      opts.metrics.request(ctx.method, route, status, seconds);
      const line = { requestId, method: ctx.method, route, status, ms: Math.round(seconds * 1e4) / 10, ip: clientIp(ctx) };
      if (quiet(ctx.path)) opts.logger.debug(line, 'request');
      else opts.logger.info(line, 'request');
    }
  };
}
