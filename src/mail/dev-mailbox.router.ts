import Router from '@koa/router';
import type { Context } from 'koa';
import type {} from 'koa-views'; // brings ctx.render into Koa's Context type
import { z } from 'zod';
import { NotFoundError } from '../http/errors.js';
import { DEFAULT_LOCALE, isLocale, translator, type Locale } from '../i18n/index.js';
import type { DevMail, DevMailRepository } from '../persistence/dev-mail.repository.js';

/**
 * The development mailbox: every mail the provider sent while it had no SMTP server, readable in the
 * browser and as JSON (tools read OTPs there). It shows OTPs to anyone, so mount it only when
 * `config.devMailbox` is on.
 */
export function devMailboxRouter(deps: { repo: Pick<DevMailRepository, 'listLatest' | 'get'> }): Router {
  const { repo } = deps;
  const router = new Router();

  const listQuery = z.object({
    to: z.string().trim().max(320).optional().catch(undefined),
    limit: z.coerce.number().int().min(1).max(200).catch(50),
  });

  router.get('/dev/mailbox', async (ctx) => {
    const { to, limit } = listQuery.parse(ctx.query);
    const locale = pageLocale(ctx);
    const messages = await repo.listLatest(limit, { to: to || undefined });
    noStore(ctx);
    await ctx.render('dev-mailbox/list', {
      pageTitle: translator(locale)('mailbox:title'),
      to: to ?? '',
      limit,
      jsonHref: `/dev/mailbox.json${to ? `?to=${encodeURIComponent(to)}` : ''}`,
      messages: messages.map((m) => ({ ...view(m, locale), href: `/dev/mailbox/${m.id}` })),
    });
  });

  router.get('/dev/mailbox.json', async (ctx) => {
    const { to, limit } = listQuery.parse({ limit: 20, ...ctx.query });
    const messages = await repo.listLatest(limit, { to: to || undefined });
    noStore(ctx);
    ctx.body = {
      messages: messages.map((m) => ({ id: m.id, to: m.to, subject: m.subject, text: m.text, html: m.html, createdAt: m.createdAt.toISOString() })),
    };
  });

  router.get('/dev/mailbox/:id', async (ctx) => {
    const message = await repo.get(ctx.params.id ?? '');
    if (!message) throw new NotFoundError();
    const locale = pageLocale(ctx);
    noStore(ctx);
    await ctx.render('dev-mailbox/message', {
      pageTitle: `${message.subject} | ${translator(locale)('mailbox:title')}`,
      message: view(message, locale),
      backHref: `/dev/mailbox?to=${encodeURIComponent(message.to)}`,
    });
  });

  return router;
}

function pageLocale(ctx: Context): Locale {
  const chosen: unknown = ctx.state.locale;
  return isLocale(chosen) ? chosen : DEFAULT_LOCALE;
}

function view(m: DevMail, locale: Locale) {
  const format = new Intl.DateTimeFormat(locale === 'ja' ? 'ja-JP' : 'en-GB', { dateStyle: 'medium', timeStyle: 'medium' });
  return { id: m.id, to: m.to, subject: m.subject, text: m.text, html: m.html, createdAtIso: m.createdAt.toISOString(), createdAtText: format.format(m.createdAt) };
}

function noStore(ctx: Context): void {
  // The pages hold OTPs: keep them out of caches and search engines.
  ctx.set('Cache-Control', 'no-store');
  ctx.set('X-Robots-Tag', 'noindex, nofollow');
}
