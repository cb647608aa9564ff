import type { Context } from 'koa';

/** The caller's IP; X-Forwarded-For is only believed when TRUST_PROXY is set (Koa's app.proxy). */
export function clientIp(ctx: Context): string | null {
  const ip = ctx.ip || ctx.request.socket.remoteAddress || null;
  return ip?.startsWith('::ffff:') ? ip.slice(7) : ip;
}
