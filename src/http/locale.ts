import type { Context, Next } from 'koa';
import { isLocale, negotiateLocale, translator } from '../i18n/index.js';
import { langSwitchUrlOf } from './pages.js';

/**
 * Picks the page language (?lang=, then the `lang` cookie, then Accept-Language; interaction pages
 * also honour the OIDC request's ui_locales) and exposes `t`, `locale` and the language switch link
 * to every view. An explicit ?lang= is remembered in a cookie.
 */
export function locale() {
  return async (ctx: Context, next: Next) => {
    // Parsing the query is skipped when it cannot hold `lang` (an authorization request's is long).
    const lang = ctx.querystring.includes('lang=') ? ctx.query.lang : undefined;
    const fromQuery = typeof lang === 'string' ? lang : undefined;
    if (isLocale(fromQuery)) ctx.cookies.set('lang', fromQuery, { httpOnly: true, sameSite: 'lax', maxAge: 365 * 24 * 3600 * 1000, signed: false });
    const chosen = negotiateLocale([fromQuery, ctx.cookies.get('lang', { signed: false })], ctx.get('accept-language'));
    setLocale(ctx, chosen);
    return next();
  };
}

export function setLocale(ctx: Context, chosen: ReturnType<typeof negotiateLocale>) {
  ctx.state.locale = chosen;
  ctx.state.t = translator(chosen);
  // Built when a page reads it: most requests (oidc-provider's, redirects, posts) render no page.
  const url = ctx.method === 'GET' ? ctx.url : undefined;
  let link: string | undefined | null = null;
  Object.defineProperty(ctx.state, 'langSwitchUrl', {
    configurable: true,
    enumerable: true,
    get: () => (link === null ? (link = langSwitchUrlOf(chosen, url)) : link),
  });
}
