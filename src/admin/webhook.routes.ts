import type Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { z } from 'zod';
import { decodeCursor, encodeCursor, type AuditAction, type StaffActor } from '../audit/audit.service.js';
import { WEBHOOK_EVENTS } from '../webhooks/webhook-events.js';
import { deliveryView, MAX_ROTATION_GRACE_SECONDS, webhookView, type WebhookService } from '../webhooks/webhook.service.js';
import { API_PREFIX, RequestValidationError } from './problem.js';

export const createWebhookBody = z.strictObject({
  url: z.string().min(1).max(2048),
  events: z.array(z.enum(WEBHOOK_EVENTS)).min(1).max(WEBHOOK_EVENTS.length).optional(),
  description: z.string().max(200).optional(),
});
export const patchWebhookBody = z
  .strictObject({
    url: z.string().min(1).max(2048).optional(),
    events: z.array(z.enum(WEBHOOK_EVENTS)).min(1).max(WEBHOOK_EVENTS.length).optional(),
    description: z.string().max(200).nullable().optional(),
    enabled: z.boolean().optional(),
  })
  .refine((b) => Object.values(b).some((v) => v !== undefined), { params: { messageKey: 'management:fields.empty_webhook_patch' } });
const rotateBody = z.strictObject({ graceSeconds: z.number().int().min(0).max(MAX_ROTATION_GRACE_SECONDS).optional() });
const deliveriesQuery = z.object({ cursor: z.string().max(200).optional(), limit: z.coerce.number().int().min(1).max(100).default(20) });

const hookPath = (id: string) => `${API_PREFIX}/webhooks/${encodeURIComponent(id)}`;

/**
 * The tenant's webhooks: register (the signing secret is in this answer only), list, read, change,
 * rotate the secret, delete, send a test event, read the delivery log and send a delivery again. Another tenant's hook is a 404, like a missing one.
 */
export function webhookRoutes(
  router: Router,
  deps: {
    webhooks: WebhookService;
    authenticate: Middleware;
    caller: (ctx: Context) => { tenantId: string; clientId: string };
    /** The caller as the audit trail names it. */
    staff: (ctx: Context) => StaffActor;
    /** Records the action as refused when the route turns it down (a 4xx). */
    audited: (action: AuditAction) => Middleware;
    parse: <S extends z.ZodType>(schema: S, input: unknown) => z.output<S>;
    jsonBody: (ctx: Context) => unknown;
  },
): void {
  const { webhooks, authenticate, caller, staff, audited, parse, jsonBody } = deps;
  const idOf = (ctx: Context): string => ctx.params.id ?? '';

  router.post('/webhooks', authenticate, audited('webhook.registered'), async (ctx) => {
    const body = parse(createWebhookBody, jsonBody(ctx));
    const { tenantId, clientId } = caller(ctx);
    const { hook, secret } = await webhooks.register(tenantId, body, clientId, staff(ctx));
    ctx.status = 201;
    ctx.set('Location', hookPath(hook.id));
    ctx.body = { ...webhookView(hook), secret };
  });

  router.get('/webhooks', authenticate, async (ctx) => {
    ctx.body = { items: (await webhooks.list(caller(ctx).tenantId)).map((h) => webhookView(h)) };
  });

  router.get('/webhooks/:id', authenticate, async (ctx) => {
    ctx.body = webhookView(await webhooks.find(caller(ctx).tenantId, idOf(ctx)));
  });

  router.patch('/webhooks/:id', authenticate, audited('webhook.updated'), async (ctx) => {
    const body = parse(patchWebhookBody, jsonBody(ctx));
    ctx.body = webhookView(await webhooks.update(caller(ctx).tenantId, idOf(ctx), body, staff(ctx)));
  });

  router.post('/webhooks/:id/rotate-secret', authenticate, audited('webhook.secret_rotated'), async (ctx) => {
    const body = parse(rotateBody, jsonBody(ctx));
    const { hook, secret } = await webhooks.rotateSecret(caller(ctx).tenantId, idOf(ctx), body.graceSeconds, staff(ctx));
    ctx.body = { ...webhookView(hook), secret };
  });

  router.post('/webhooks/:id/deliveries/:deliveryId/redeliver', authenticate, audited('webhook.redelivered'), async (ctx) => {
    const d = await webhooks.redeliver(caller(ctx).tenantId, idOf(ctx), ctx.params.deliveryId ?? '', staff(ctx));
    ctx.status = 202;
    ctx.body = { deliveryId: d.id, eventId: d.eventId, eventType: d.eventType, redeliveryOf: d.redeliveryOf };
  });

  router.delete('/webhooks/:id', authenticate, audited('webhook.deleted'), async (ctx) => {
    await webhooks.delete(caller(ctx).tenantId, idOf(ctx), staff(ctx));
    ctx.status = 204;
  });

  router.post('/webhooks/:id/test', authenticate, audited('webhook.tested'), async (ctx) => {
    const d = await webhooks.test(caller(ctx).tenantId, idOf(ctx), staff(ctx));
    ctx.status = 202;
    ctx.body = { deliveryId: d.id, eventId: d.eventId, eventType: d.eventType };
  });

  router.get('/webhooks/:id/deliveries', authenticate, async (ctx) => {
    const q = parse(deliveriesQuery, ctx.query);
    const before = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
    if (q.cursor !== undefined && !before) throw new RequestValidationError([{ field: 'cursor', messageKey: 'management:fields.bad_cursor' }]);
    const id = idOf(ctx);
    const rows = await webhooks.deliveries(caller(ctx).tenantId, id, { take: q.limit + 1, before });
    const items = rows.slice(0, q.limit);
    const last = items.at(-1);
    const next = rows.length > q.limit && last ? encodeCursor(last) : null;
    const link = (c?: string) => `${hookPath(id)}/deliveries?limit=${q.limit}${c ? `&cursor=${c}` : ''}`;
    ctx.body = { items: items.map(deliveryView), nextCursor: next, links: { self: link(q.cursor), ...(next ? { next: link(next) } : {}) } };
  });
}
