import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet, { type HelmetOptions } from 'helmet';
import type { Middleware } from 'koa';

/**
 * Helmet's response headers (CSP, HSTS, frame and referrer policies…), worked out once: with fixed
 * options they are the same for every request, and helmet otherwise runs its chain of a dozen
 * middlewares and rebuilds the CSP string on each one. Options must not hold per-request values
 * (directive functions such as nonces); that is checked here.
 */
export function securityHeaders(options: HelmetOptions): Middleware {
  const headers: Array<[string, string]> = [];
  const res = {
    setHeader(name: string, value: string | number | readonly string[]) {
      headers.push([name, String(value)]);
    },
    removeHeader() {
      // X-Powered-By, which Koa never sets.
    },
  };
  for (const [name, values] of Object.entries(options.contentSecurityPolicy && typeof options.contentSecurityPolicy === 'object' ? (options.contentSecurityPolicy.directives ?? {}) : {}))
    if (Array.isArray(values) && values.some((v) => typeof v === 'function')) throw new Error(`CSP directive ${name} varies per request; securityHeaders cannot fix it once`);
  let done = false;
  helmet(options)({} as IncomingMessage, res as unknown as ServerResponse, (err?: unknown) => {
    if (err) throw err;
    done = true;
  });
  if (!done) throw new Error('helmet did not finish synchronously');
  return (ctx, next) => {
    for (const [name, value] of headers) ctx.res.setHeader(name, value);
    return next();
  };
}
