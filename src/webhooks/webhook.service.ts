import { randomBytes, randomUUID } from 'node:crypto';
import { AccountValidationError } from '../account/account-errors.js';
import { AppError } from '../http/errors.js';
import { sealedBox } from '../http/sealed-box.js';
import type { DeliveryWithAttempts, Webhook, WebhookDelivery, WebhookRepository } from '../persistence/webhook.repository.js';
import { SECRET_PURPOSE } from './webhook-delivery.js';
import { DEFAULT_EVENTS, TEST_EVENT, type WebhookEventType } from './webhook-events.js';
import { targetProblem, type TargetPolicy } from './webhook-target.js';

export class WebhookNotFoundError extends AppError {
  constructor() {
    super('webhook_not_found', 404, 'management:errors.webhook_not_found');
  }
}

/** At most this many hooks per tenant: each event costs one delivery per hook. */
export const MAX_HOOKS_PER_TENANT = 20;

export interface WebhookView {
  id: string;
  url: string;
  events: string[];
  description: string | null;
  createdAt: string;
}

export function webhookView(h: Webhook): WebhookView {
  return { id: h.id, url: h.url, events: h.events, description: h.description, createdAt: h.createdAt.toISOString() };
}

export function deliveryView(d: DeliveryWithAttempts) {
  return {
    id: d.id,
    eventId: d.eventId,
    eventType: d.eventType,
    status: d.status as 'pending' | 'delivered' | 'failed',
    attempts: d.attempts,
    createdAt: d.createdAt.toISOString(),
    nextAttemptAt: d.status === 'pending' ? d.nextAttemptAt.toISOString() : null,
    deliveredAt: d.deliveredAt?.toISOString() ?? null,
    failedAt: d.failedAt?.toISOString() ?? null,
    attemptLog: d.attemptLog.map((a) => ({ number: a.number, at: a.createdAt.toISOString(), statusCode: a.statusCode, error: a.error, durationMs: a.durationMs })),
  };
}

/**
 * A tenant's webhooks (management API): registration with a fresh signing secret (shown once), the
 * list, deletion, a test delivery and the delivery log. Every look-up is within the caller's tenant,
 * so another tenant's hook is simply not found.
 */
export class WebhookService {
  private readonly box: ReturnType<typeof sealedBox>;

  constructor(
    private readonly deps: { repo: WebhookRepository; cookieKeys: string[]; target: TargetPolicy; onQueued?: () => void; onChanged?: () => void },
  ) {
    this.box = sealedBox(deps.cookieKeys, SECRET_PURPOSE);
  }

  async register(tenantId: string, input: { url: string; events?: WebhookEventType[]; description?: string }, createdBy: string | null): Promise<{ hook: Webhook; secret: string }> {
    const problem = await targetProblem(input.url, this.deps.target);
    if (problem) throw new AccountValidationError('url', `management:fields.${problem}`);
    if ((await this.deps.repo.list(tenantId)).length >= MAX_HOOKS_PER_TENANT) throw new AccountValidationError('url', 'management:fields.webhook_limit', { max: MAX_HOOKS_PER_TENANT });
    const secret = `whsec_${randomBytes(32).toString('base64url')}`;
    const events = [...new Set(input.events ?? DEFAULT_EVENTS)];
    const hook = await this.deps.repo.create({ tenantId, url: input.url, events, description: input.description ?? null, sealedSecret: this.box.seal(secret), createdBy });
    this.deps.onChanged?.();
    return { hook, secret };
  }

  list(tenantId: string): Promise<Webhook[]> {
    return this.deps.repo.list(tenantId);
  }

  async find(tenantId: string, id: string): Promise<Webhook> {
    const hook = await this.deps.repo.find(tenantId, id);
    if (!hook) throw new WebhookNotFoundError();
    return hook;
  }

  async delete(tenantId: string, id: string): Promise<void> {
    if (!(await this.deps.repo.delete(tenantId, id))) throw new WebhookNotFoundError();
    this.deps.onChanged?.();
  }

  /** Queues a `webhook.test` event for this hook only; it goes out like any other (signed, retried). */
  async test(tenantId: string, id: string): Promise<WebhookDelivery> {
    const hook = await this.find(tenantId, id);
    const delivery = await this.deps.repo.enqueueForHook(hook, { eventId: randomUUID(), type: TEST_EVENT, data: { webhookId: hook.id } });
    this.deps.onQueued?.();
    return delivery;
  }

  async deliveries(tenantId: string, id: string, opts: { take: number; before?: { createdAt: Date; id: string } }): Promise<DeliveryWithAttempts[]> {
    const hook = await this.find(tenantId, id);
    return this.deps.repo.listDeliveries(hook.id, opts);
  }
}
