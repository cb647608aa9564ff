import type { LoginEvent, LoginEventRepository } from '../persistence/login-event.repository.js';

/** Rows per page of the login history (ログイン履歴閲覧). */
export const HISTORY_PAGE_SIZE = 20;

/** One page of an account's recent login events, with the manual's counters (「1～3/3件」, 「1/1ページ」). */
export interface HistoryPage {
  items: LoginEvent[];
  /** Events in the window. */
  total: number;
  /** The page shown (1-based); a request past the end shows the last page. */
  page: number;
  /** Number of pages; 0 when there are no events. */
  pages: number;
  /** 1-based position of the first and last row shown; both 0 when there are none. */
  from: number;
  to: number;
  /** Start of the window: the same time one calendar month before now. */
  since: Date;
}

/**
 * The same instant one calendar month earlier ("直近1ヶ月"), clamped to the end of a shorter
 * month (31 March → 28/29 February, not 3 March).
 */
export function oneMonthBefore(now: Date): Date {
  const d = new Date(now);
  const day = d.getUTCDate();
  d.setUTCDate(1);
  d.setUTCMonth(d.getUTCMonth() - 1);
  const lastDay = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0)).getUTCDate();
  d.setUTCDate(Math.min(day, lastDay));
  return d;
}

/** The account's own login history, as the account area shows it: the last month, newest first, paged. */
export class LoginHistoryService {
  constructor(private readonly repo: LoginEventRepository) {}

  /** `requestedPage` is whatever the user asked for; anything not a page number shows page 1. */
  async page(accountId: string, requestedPage: number, now = new Date()): Promise<HistoryPage> {
    const since = oneMonthBefore(now);
    const total = await this.repo.countForAccount(accountId, since);
    const pages = Math.ceil(total / HISTORY_PAGE_SIZE);
    const wanted = Number.isSafeInteger(requestedPage) && requestedPage >= 1 ? requestedPage : 1;
    const page = Math.max(1, Math.min(wanted, pages));
    const items = total ? await this.repo.listForAccount(accountId, { since, skip: (page - 1) * HISTORY_PAGE_SIZE, take: HISTORY_PAGE_SIZE }) : [];
    const from = items.length ? (page - 1) * HISTORY_PAGE_SIZE + 1 : 0;
    return { items, total, page, pages, from, to: items.length ? from + items.length - 1 : 0, since };
  }
}
