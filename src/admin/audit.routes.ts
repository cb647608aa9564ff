import { Readable } from 'node:stream';
import type Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { z } from 'zod';
import { ACTOR_KINDS, AUDIT_ACTIONS, AUDIT_OUTCOMES, auditView, decodeCursor, type AuditService } from '../audit/audit.service.js';
import type { AuditFilter } from '../persistence/audit.repository.js';
import { API_PREFIX, RequestValidationError } from './problem.js';

const filterFields = {
  user_id: z.string().min(1).max(64).optional(),
  action: z.enum(AUDIT_ACTIONS).optional(),
  actor_kind: z.enum(ACTOR_KINDS).optional(),
  actor_id: z.string().min(1).max(200).optional(),
  outcome: z.enum(AUDIT_OUTCOMES).optional(),
  since: z.iso.datetime({ offset: true }).optional(),
  until: z.iso.datetime({ offset: true }).optional(),
};
export const auditListQuery = z.object({ ...filterFields, cursor: z.string().max(200).optional(), limit: z.coerce.number().int().min(1).max(100).default(50) });
export const auditExportQuery = z.object({ ...filterFields, format: z.enum(['jsonl']).optional() });

function filterOf(tenantId: string, q: z.output<typeof auditExportQuery>): AuditFilter {
  const since = q.since ? new Date(q.since) : undefined;
  const until = q.until ? new Date(q.until) : undefined;
  if (since && until && since >= until) throw new RequestValidationError([{ field: 'since', messageKey: 'management:fields.bad_time_range' }]);
  return { tenantId, userId: q.user_id, action: q.action, actorKind: q.actor_kind, actorId: q.actor_id, outcome: q.outcome, since, until };
}

/**
 * `GET /audit` (one page, newest first, keyset cursor) and `GET /audit/export` (every matching record
 * as JSON Lines, streamed in batches), both within the caller's tenant only.
 */
export function auditRoutes(
  router: Router,
  deps: { audit: AuditService; authenticate: Middleware; tenantOf: (ctx: Context) => string; parse: <S extends z.ZodType>(schema: S, input: unknown) => z.output<S> },
): void {
  const { audit, authenticate, tenantOf, parse } = deps;

  router.get('/audit', authenticate, async (ctx) => {
    const q = parse(auditListQuery, ctx.query);
    const cursor = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
    if (q.cursor !== undefined && !cursor) throw new RequestValidationError([{ field: 'cursor', messageKey: 'management:fields.bad_cursor' }]);
    const { items, next } = await audit.list(filterOf(tenantOf(ctx), q), { cursor, limit: q.limit });
    const link = (c?: string) => {
      const params = new URLSearchParams();
      for (const key of ['user_id', 'action', 'actor_kind', 'actor_id', 'outcome', 'since', 'until'] as const) if (q[key] !== undefined) params.set(key, q[key]);
      params.set('limit', String(q.limit));
      if (c) params.set('cursor', c);
      return `${API_PREFIX}/audit?${params.toString()}`;
    };
    ctx.body = { items: items.map(auditView), nextCursor: next, links: { self: link(q.cursor), ...(next ? { next: link(next) } : {}) } };
  });

  router.get('/audit/export', authenticate, async (ctx) => {
    const q = parse(auditExportQuery, ctx.query);
    const filter = filterOf(tenantOf(ctx), q);
    const lines = (async function* () {
      for await (const r of audit.all(filter)) yield `${JSON.stringify(auditView(r))}\n`;
    })();
    ctx.set('Content-Disposition', `attachment; filename="audit-${filter.tenantId}-${new Date().toISOString().slice(0, 10)}.jsonl"`);
    ctx.type = 'application/x-ndjson; charset=utf-8';
    ctx.body = Readable.from(lines);
  });
}
