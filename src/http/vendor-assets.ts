import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Middleware } from 'koa';

/**
 * Browser libraries served from our own origin (the CSP allows scripts from 'self' only), read from
 * the installed package so the version is the lockfile's. Each is read once, at the first request.
 */
const VENDOR: Record<string, () => string> = {
  // @simplewebauthn/browser's UMD bundle: defines window.SimpleWebAuthnBrowser.
  '/static/vendor/simplewebauthn-browser.js': () =>
    join(dirname(createRequire(import.meta.url).resolve('@simplewebauthn/browser')), '..', 'dist', 'bundle', 'index.umd.min.js'),
};

export function vendorAssets(): Middleware {
  const loaded = new Map<string, { body: Buffer; etag: string }>();
  return async (ctx, next) => {
    const locate = VENDOR[ctx.path];
    if (!locate || (ctx.method !== 'GET' && ctx.method !== 'HEAD')) return next();
    let asset = loaded.get(ctx.path);
    if (!asset) {
      const body = readFileSync(locate());
      asset = { body, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"` };
      loaded.set(ctx.path, asset);
    }
    ctx.set('Cache-Control', 'public, max-age=3600');
    ctx.etag = asset.etag;
    ctx.type = 'application/javascript; charset=utf-8';
    if (ctx.fresh) {
      ctx.status = 304;
      return;
    }
    ctx.body = asset.body;
  };
}
