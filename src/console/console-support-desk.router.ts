import Router from '@koa/router';
import { Readable } from 'node:stream';
import type { Context, Next } from 'koa';
import { z } from 'zod';
import { ACTOR_KINDS, AUDIT_ACTIONS, auditView, decodeCursor, type AuditService } from '../audit/audit.service.js';
import type { TenantDirectory } from '../config/index.js';
import { BadRequestError, ForbiddenError } from '../http/errors.js';
import type { AccountRepository } from '../persistence/account.repository.js';
import type { AuditFilter } from '../persistence/audit.repository.js';
import type { SessionRepository } from '../persistence/session.repository.js';
import type { WebhookService } from '../webhooks/webhook.service.js';
import { DEFAULT_EVENTS, WEBHOOK_EVENTS, type WebhookEventType } from '../webhooks/webhook-events.js';
import { requireStaff, staffOf, staffRequest } from './console-session.js';
import { consoleTime } from './console.router.js';

/** Records per page of the console's audit view. */
export const AUDIT_PAGE_SIZE = 50;
/** Deliveries shown on a webhook's page (the newest). */
export const DELIVERIES_SHOWN = 20;

const optional = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (v === '' ? undefined : v), schema.optional()).catch(undefined);
// datetime-local inputs send `2026-11-30T12:34` (no zone): read as UTC, as the pages show UTC.
const localTime = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/)
  .transform((v) => new Date(`${v.length === 16 ? `${v}:00` : v}Z`));

const auditQuery = z.object({
  user_id: optional(z.string().trim().min(1).max(64)),
  action: optional(z.enum(AUDIT_ACTIONS)),
  actor_kind: optional(z.enum(ACTOR_KINDS)),
  actor_id: optional(z.string().trim().min(1).max(200)),
  since: optional(localTime),
  until: optional(localTime),
  cursor: optional(z.string().max(200)),
});

const registerBody = z.object({
  url: z.string().trim().min(1).max(2000),
  description: z.string().trim().max(200).optional(),
  events: z.union([z.string(), z.array(z.string())]).optional(),
});

/**
 * The support console's 操作記録 (audit trail: filters, pages, a JSON Lines export) and Webhook pages
 * (list, register with the secret shown once, delete, delivery log, test delivery), through
 * AuditService and WebhookService with the staff member's tenant. Every staff member reads both;
 * registering and deleting webhooks is for `admin`.
 */
export function consoleSupportDeskRouter(deps: {
  tenants: TenantDirectory;
  accounts: AccountRepository;
  sessions: SessionRepository;
  audit: AuditService;
  webhooks: WebhookService;
  secure: boolean;
}) {
  const router = new Router({ prefix: '/console' });
  const staffOnly = requireStaff({ accounts: deps.accounts, tenants: deps.tenants, sessions: deps.sessions, secure: deps.secure });
  const adminOnly = async (ctx: Context, next: Next) => {
    if (staffOf(ctx).staff.role !== 'admin') throw new ForbiddenError('console:errors.not_allowed');
    return next();
  };

  const filterOf = (tenantId: string, q: z.output<typeof auditQuery>): AuditFilter => ({
    tenantId,
    userId: q.user_id,
    action: q.action,
    actorKind: q.actor_kind,
    actorId: q.actor_id,
    since: q.since,
    until: q.until,
  });
  const queryString = (q: z.output<typeof auditQuery>, extra: Record<string, string> = {}) => {
    const p = new URLSearchParams();
    for (const key of ['user_id', 'action', 'actor_kind', 'actor_id'] as const) if (q[key]) p.set(key, q[key]);
    if (q.since) p.set('since', q.since.toISOString().slice(0, 16));
    if (q.until) p.set('until', q.until.toISOString().slice(0, 16));
    for (const [k, v] of Object.entries(extra)) p.set(k, v);
    return p.toString();
  };

  router.get('/audit', staffOnly, async (ctx) => {
    const { staff, tenant } = staffOf(ctx);
    const q = auditQuery.parse(ctx.query);
    const cursor = q.cursor ? decodeCursor(q.cursor) : undefined;
    const { items, next } = await deps.audit.list(filterOf(tenant.id, q), { cursor, limit: AUDIT_PAGE_SIZE });
    await ctx.render('console/audit', {
      staff,
      tenant,
      menu: 'audit',
      q,
      records: items.map(auditView),
      actions: AUDIT_ACTIONS,
      actorKinds: ACTOR_KINDS,
      nextUrl: next ? `/console/audit?${queryString(q, { cursor: next })}` : undefined,
      firstUrl: q.cursor ? `/console/audit?${queryString(q)}` : undefined,
      exportUrl: `/console/audit/export?${queryString(q)}`,
      consoleTime,
    });
  });

  router.get('/audit/export', staffOnly, async (ctx) => {
    const { tenant } = staffOf(ctx);
    const filter = filterOf(tenant.id, auditQuery.parse(ctx.query));
    const lines = (async function* () {
      for await (const r of deps.audit.all(filter)) yield `${JSON.stringify(auditView(r))}\n`;
    })();
    ctx.set('Content-Disposition', `attachment; filename="audit-${tenant.id}-${new Date().toISOString().slice(0, 10)}.jsonl"`);
    ctx.type = 'application/x-ndjson; charset=utf-8';
    ctx.body = Readable.from(lines);
  });

  router.get('/webhooks', staffOnly, async (ctx) => {
    const { staff, tenant } = staffOf(ctx);
    const hooks = await deps.webhooks.list(tenant.id);
    await ctx.render('console/webhooks', { staff, tenant, menu: 'webhooks', hooks, events: WEBHOOK_EVENTS, defaults: DEFAULT_EVENTS, consoleTime, notice: ctx.query.done === 'deleted' ? 'deleted' : undefined });
  });

  router.post('/webhooks', staffOnly, adminOnly, async (ctx) => {
    const { staff, tenant } = staffOf(ctx);
    const body = registerBody.safeParse((ctx.request as { body?: unknown }).body ?? {});
    if (!body.success) throw new BadRequestError('console:errors.bad_webhook', {}, '/console/webhooks');
    const chosen = body.data.events === undefined ? undefined : [body.data.events].flat();
    const events = chosen?.filter((e): e is WebhookEventType => (WEBHOOK_EVENTS as readonly string[]).includes(e));
    const { hook, secret } = await deps.webhooks.register(
      tenant.id,
      { url: body.data.url, events: events?.length ? events : undefined, description: body.data.description || undefined },
      `console:${staff.userId}`,
      staffRequest(ctx).staff,
    );
    // The signing secret is shown on this answer only (no-store), as the API returns it once.
    await ctx.render('console/webhook-registered', { staff, tenant, menu: 'webhooks', hook, secret });
  });

  router.get('/webhooks/:id', staffOnly, async (ctx) => {
    const { staff, tenant } = staffOf(ctx);
    const hook = await deps.webhooks.find(tenant.id, ctx.params.id ?? '');
    const deliveries = await deps.webhooks.deliveries(tenant.id, hook.id, { take: DELIVERIES_SHOWN });
    await ctx.render('console/webhook', { staff, tenant, menu: 'webhooks', hook, deliveries, consoleTime, notice: ctx.query.done === 'test_queued' ? 'test_queued' : undefined });
  });

  router.post('/webhooks/:id/test', staffOnly, async (ctx) => {
    const { tenant } = staffOf(ctx);
    const id = ctx.params.id ?? '';
    await deps.webhooks.test(tenant.id, id, staffRequest(ctx).staff);
    ctx.status = 303;
    ctx.redirect(`/console/webhooks/${encodeURIComponent(id)}?done=test_queued`);
  });

  router.get('/webhooks/:id/delete', staffOnly, adminOnly, async (ctx) => {
    const { staff, tenant } = staffOf(ctx);
    const hook = await deps.webhooks.find(tenant.id, ctx.params.id ?? '');
    await ctx.render('console/webhook-delete', { staff, tenant, menu: 'webhooks', hook });
  });

  router.post('/webhooks/:id/delete', staffOnly, adminOnly, async (ctx) => {
    const { tenant } = staffOf(ctx);
    await deps.webhooks.delete(tenant.id, ctx.params.id ?? '', staffRequest(ctx).staff);
    ctx.status = 303;
    ctx.redirect('/console/webhooks?done=deleted');
  });

  return router;
}
