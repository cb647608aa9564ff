import Router from '@koa/router';
import type { Context } from 'koa';
import { accountConsoleClientId, type TenantDirectory } from '../../config/index.js';
import { formatEventTime } from '../../history/event-time.js';
import { HISTORY_PAGE_SIZE, type LoginHistoryService } from '../../history/login-history.service.js';
import type { AccountRepository } from '../../persistence/account.repository.js';
import type { LoginEvent } from '../../persistence/login-event.repository.js';
import { requireAreaSession, type AreaState } from './area-session.js';

export interface HistoryRouterDeps {
  tenants: TenantDirectory;
  accounts: AccountRepository;
  history: LoginHistoryService;
  secure: boolean;
}

/** One table row, already in the reader's words. */
interface HistoryRow {
  time: string;
  /** Machine-readable, for <time datetime>. */
  iso: string;
  ip: string;
  result: string;
  success: boolean;
  site: string;
  method: string;
}

/**
 * ログイン履歴閲覧 (manual chapter 5): the account's own login events of the last month, newest
 * first, HISTORY_PAGE_SIZE per page (?page=), with the manual's 「1～3/3件」 and 「1/1ページ」.
 * A page past the end shows the last page; anything else shows the first.
 */
export function historyRouter(deps: HistoryRouterDeps) {
  const router = new Router({ prefix: '/account' });

  router.get('/history', requireAreaSession(deps), async (ctx: Context) => {
    const area = ctx.state.area as AreaState;
    const t = ctx.state.t as (k: string, p?: object) => string;
    const raw = typeof ctx.query.page === 'string' ? ctx.query.page.trim() : '';
    // Digits only; a huge number still means "past the end", so it is capped rather than refused.
    const requested = /^\d+$/.test(raw) ? Math.min(Number(raw), Number.MAX_SAFE_INTEGER) : 1;
    const page = await deps.history.page(area.account.id, requested);

    const consoleId = accountConsoleClientId(area.tenant.id);
    const site = (clientId: string | null) => {
      if (!clientId) return '-';
      if (clientId === consoleId) return t('history:console');
      // A client removed from config since keeps its id rather than a blank.
      return deps.tenants.client(clientId)?.client.name ?? clientId;
    };
    const row = (e: LoginEvent): HistoryRow => ({
      time: formatEventTime(e.createdAt, ctx.state.locale),
      iso: e.createdAt.toISOString(),
      ip: e.sourceIp ?? '-',
      result: t(`history:results.${e.result}`, { defaultValue: e.result }),
      success: e.result === 'success',
      site: site(e.clientId),
      method: e.method ? t(`history:methods.${e.method}`, { defaultValue: e.method }) : '-',
    });

    await ctx.render('account/history', {
      pageTitle: t('history:title'),
      area,
      menu: 'history',
      rows: page.items.map(row),
      page,
      pageSize: HISTORY_PAGE_SIZE,
      prevUrl: page.page > 1 ? `/account/history?page=${page.page - 1}` : undefined,
      nextUrl: page.page < page.pages ? `/account/history?page=${page.page + 1}` : undefined,
    });
  });

  return router;
}
