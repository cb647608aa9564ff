import type { IncomingMessage } from 'node:http';
import type { Context, Next } from 'koa';
import { BadRequestError } from './errors.js';

// A lone half of a UTF-16 surrogate pair: no UTF-8 text holds one, and PostgreSQL refuses it in JSON.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether PostgreSQL can store the text: no NUL byte (U+0000), no lone surrogate. */
export function isStorableText(s: string): boolean {
  return !s.includes('\0') && !LONE_SURROGATE.test(s);
}

/** Whether a parsed value (strings, arrays, objects; keys included) holds only storable text. */
export function isStorableValue(value: unknown, depth = 0): boolean {
  if (typeof value === 'string') return isStorableText(value);
  if (value === null || typeof value !== 'object') return true;
  if (depth > 32) return false;
  if (Array.isArray(value)) return value.every((v) => isStorableValue(v, depth + 1));
  return Object.entries(value).every(([k, v]) => isStorableText(k) && isStorableValue(v, depth + 1));
}

/** Decodes one percent-encoded component; undefined when it is not valid UTF-8 or not storable. */
function decodeComponent(raw: string, plusIsSpace: boolean): string | undefined {
  try {
    const decoded = decodeURIComponent(plusIsSpace ? raw.replace(/\+/g, ' ') : raw);
    return isStorableText(decoded) ? decoded : undefined;
  } catch {
    return undefined; // malformed escape or invalid UTF-8 (%ff, %c3, %ed%a0%80)
  }
}

/** Whether every key and value of an `a=1&b=2` string decodes to storable text. */
export function isWellFormedUrlEncoded(raw: string): boolean {
  if (!raw) return true;
  return raw.split('&').every((pair) => pair.split('=').every((part) => decodeComponent(part, true) !== undefined));
}

/**
 * Cookies are not necessarily percent-encoded (a value may hold a literal `%`), so only a value
 * that does decode is checked, for a NUL byte.
 */
function cookiesStorable(header: string): boolean {
  for (const pair of header.split(';')) {
    if (pair.includes('\0')) return false;
    try {
      if (!isStorableText(decodeURIComponent(pair))) return false;
    } catch {
      // not percent-encoded: taken literally, and a literal value has no NUL (checked above)
    }
  }
  return true;
}

/** oidc-provider's endpoints that a browser opens (authorization, logout). */
const BROWSER_ENDPOINTS = /^\/(auth|session)(\/|$)/;

/** Whether the request line and cookies hold only text PostgreSQL can store. */
function urlAndCookiesStorable(ctx: Context): boolean {
  return decodeComponent(ctx.path, false) !== undefined && isWellFormedUrlEncoded(ctx.querystring) && cookiesStorable(ctx.get('cookie'));
}

/**
 * Refuses, as a 400 in the user's language (problem+json under the API), a request whose path,
 * query or cookies hold text PostgreSQL cannot store (a NUL byte) or invalid UTF-8 percent-encoding,
 * before anything queries the database with it. Runs early, after the error handler and locale.
 */
export function inputGuard(opts: { isProviderPath: (path: string) => boolean }) {
  return async (ctx: Context, next: Next) => {
    if (!urlAndCookiesStorable(ctx)) {
      // Browsers get the error page; the provider's machine endpoints (token, userinfo...) OAuth JSON.
      if (opts.isProviderPath(ctx.path) && !BROWSER_ENDPOINTS.test(ctx.path)) return oauthInvalidRequest(ctx);
      throw new BadRequestError();
    }
    if (opts.isProviderPath(ctx.path)) guardProviderBody(ctx.req, !!ctx.is('application/json'));
    return next();
  };
}

/** For our own routes, after the body parser: the parsed form or JSON body holds only storable text. */
export function parsedBodyGuard() {
  return async (ctx: Context, next: Next) => {
    const request = ctx.request as { body?: unknown; rawBody?: string };
    if (!isStorableValue(request.body)) throw new BadRequestError();
    if (ctx.is('application/x-www-form-urlencoded') && typeof request.rawBody === 'string' && !isWellFormedUrlEncoded(request.rawBody)) throw new BadRequestError();
    return next();
  };
}

// oidc-provider's endpoints answer errors as OAuth JSON (RFC 6749 section 5.2), and so does this guard.
function oauthInvalidRequest(ctx: Context) {
  ctx.status = 400;
  ctx.set('Cache-Control', 'no-store');
  ctx.body = { error: 'invalid_request', error_description: 'the request holds malformed or unsupported characters' };
}

/**
 * oidc-provider reads its request bodies itself (a parser upstream makes it warn and re-encode), so
 * the body is checked as the provider reads it: the read fails at its end when the body holds text
 * that cannot be stored, which the provider answers as its own `invalid_request`.
 */
function guardProviderBody(req: IncomingMessage, isJson: boolean) {
  const read = req.iterator.bind(req);
  req.iterator = (options) => {
    const source = read(options);
    return (async function* () {
      const chunks: Buffer[] = [];
      for await (const chunk of source) {
        chunks.push(chunk as Buffer);
        yield chunk;
      }
      const text = Buffer.concat(chunks).toString('utf8');
      if (!(isJson ? jsonStorable(text) : isWellFormedUrlEncoded(text))) throw new BadRequestError();
    })();
  };
}

function jsonStorable(text: string): boolean {
  try {
    return isStorableValue(JSON.parse(text));
  } catch {
    return true; // not JSON at all: the provider's own parser refuses it
  }
}
