import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pug from 'pug';
import { translator, type Locale } from '../i18n/index.js';

export const VIEWS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'views');

/** Locals every page gets: the translate function, the locale and a link to the other language. */
export function pageLocals(locale: Locale, currentUrl?: string): Record<string, unknown> {
  return { t: translator(locale), locale, langSwitchUrl: langSwitchUrlOf(locale, currentUrl) };
}

/** The link to the same page in the other language (none for a page that answers a form post). */
export function langSwitchUrlOf(locale: Locale, currentUrl: string | undefined): string | undefined {
  if (!currentUrl) return undefined;
  // Only the query, relative to the page itself: a path such as /.//evil.example/x would otherwise
  // normalise into a protocol-relative link to another site.
  const q = currentUrl.indexOf('?');
  const params = new URLSearchParams(q >= 0 ? currentUrl.slice(q + 1) : '');
  params.set('lang', locale === 'ja' ? 'en' : 'ja');
  return `?${params.toString()}`;
}

const cache = new Map<string, pug.compileTemplate>();

/**
 * Renders a view outside a koa-views context (oidc-provider's own error and logout pages are
 * rendered inside its sub-application, where ctx.render does not exist).
 */
export function renderPage(view: string, locals: Record<string, unknown>): string {
  let fn = cache.get(view);
  if (!fn) {
    fn = pug.compileFile(join(VIEWS_DIR, `${view}.pug`), { basedir: VIEWS_DIR });
    cache.set(view, fn);
  }
  return fn(locals);
}
