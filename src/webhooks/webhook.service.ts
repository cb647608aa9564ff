import type { AuditAction, AuditService, StaffActor, WebhookAuditState } from '../audit/audit.service.js';
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

export class WebhookDeliveryNotFoundError extends AppError {
  constructor() {
    super('webhook_delivery_not_found', 404, 'management:errors.webhook_delivery_not_found');
  }
}

function newSecret(): string {
  return `whsec_${randomBytes(32).toString('base64url')}`;
}

/** At most this many hooks per tenant: each event costs one delivery per hook. */
export const MAX_HOOKS_PER_TENANT = 20;

/** How long the secret a rotation replaces keeps signing, unless the rotation says otherwise. */
export const ROTATION_GRACE_SECONDS = 24 * 3600;
/** The longest grace period a rotation may ask for (7 days). */
export const MAX_ROTATION_GRACE_SECONDS = 7 * 24 * 3600;

export interface WebhookView {
  id: string;
  url: string;
  events: string[];
  description: string | null;
  /** False: no events are queued for the hook (turned off by its failures or by a PATCH). */
  enabled: boolean;
  disabledAt: string | null;
  /** Deliveries given up since the last delivered one. */
  consecutiveFailures: number;
  /** Until when the secret replaced by the last rotation still signs; null when it no longer does. */
  previousSecretExpiresAt: string | null;
  createdAt: string;
}

export function webhookAuditState(h: Webhook): WebhookAuditState {
  return { id: h.id, url: h.url, events: h.events, description: h.description, enabled: h.enabled };
}

export function webhookView(h: Webhook, now: Date = new Date()): WebhookView {
  const previous = h.previousSealedSecret && h.previousSecretExpiresAt && h.previousSecretExpiresAt > now ? h.previousSecretExpiresAt.toISOString() : null;
  return {
    id: h.id,
    url: h.url,
    events: h.events,
    description: h.description,
    enabled: h.enabled,
    disabledAt: h.disabledAt?.toISOString() ?? null,
    consecutiveFailures: h.consecutiveFailures,
    previousSecretExpiresAt: previous,
    createdAt: h.createdAt.toISOString(),
  };
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
    redeliveryOf: d.redeliveryOf,
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
    private readonly deps: {
      repo: WebhookRepository;
      cookieKeys: string[];
      target: TargetPolicy;
      onQueued?: () => void;
      onChanged?: () => void;
      /** The staff audit trail: changes made with a `who` are recorded with the hook's state before and after. */
      audit?: Pick<AuditService, 'record'>;
    },
  ) {
    this.box = sealedBox(deps.cookieKeys, SECRET_PURPOSE);
  }

  private async audit(tenantId: string, who: StaffActor | undefined, action: AuditAction, before: Webhook | null, after: Webhook | null): Promise<void> {
    if (who) await this.deps.audit?.record({ tenantId, who, action, userId: null, before: before && webhookAuditState(before), after: after && webhookAuditState(after) });
  }

  async register(tenantId: string, input: { url: string; events?: WebhookEventType[]; description?: string }, createdBy: string | null, who?: StaffActor): Promise<{ hook: Webhook; secret: string }> {
    const problem = await targetProblem(input.url, this.deps.target);
    if (problem) throw new AccountValidationError('url', `management:fields.${problem}`);
    if ((await this.deps.repo.list(tenantId)).length >= MAX_HOOKS_PER_TENANT) throw new AccountValidationError('url', 'management:fields.webhook_limit', { max: MAX_HOOKS_PER_TENANT });
    const secret = newSecret();
    const events = [...new Set(input.events ?? DEFAULT_EVENTS)];
    const hook = await this.deps.repo.create({ tenantId, url: input.url, events, description: input.description ?? null, sealedSecret: this.box.seal(secret), createdBy });
    this.deps.onChanged?.();
    await this.audit(tenantId, who, 'webhook.registered', null, hook);
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

  /** Changes the URL (checked as at registration), the events, the description, or turns the hook on or off. */
  async update(tenantId: string, id: string, change: { url?: string; events?: WebhookEventType[]; description?: string | null; enabled?: boolean }, who?: StaffActor): Promise<Webhook> {
    const before = who ? await this.find(tenantId, id) : null;
    if (change.url !== undefined) {
      const problem = await targetProblem(change.url, this.deps.target);
      if (problem) throw new AccountValidationError('url', `management:fields.${problem}`);
    }
    const hook = await this.deps.repo.update(tenantId, id, { ...change, events: change.events && [...new Set(change.events)] });
    if (!hook) throw new WebhookNotFoundError();
    // The events or the hook's state may change which tenants get login events.
    this.deps.onChanged?.();
    await this.audit(tenantId, who, 'webhook.updated', before, hook);
    return hook;
  }

  /**
   * A new secret, returned this once. The one it replaces signs too (a second v1 in the signature
   * header) for `graceSeconds` (default 24 h; 0 stops it at once, e.g. after a leak).
   */
  async rotateSecret(tenantId: string, id: string, graceSeconds: number = ROTATION_GRACE_SECONDS, who?: StaffActor): Promise<{ hook: Webhook; secret: string }> {
    const secret = newSecret();
    if (!(await this.deps.repo.rotateSecret(tenantId, id, this.box.seal(secret), new Date(Date.now() + graceSeconds * 1000)))) throw new WebhookNotFoundError();
    const hook = await this.find(tenantId, id);
    await this.audit(tenantId, who, 'webhook.secret_rotated', hook, hook);
    return { hook, secret };
  }

  /** Sends a delivery's event again (same event id and payload) as a new delivery, now, signed with the current secret. */
  async redeliver(tenantId: string, id: string, deliveryId: string, who?: StaffActor): Promise<WebhookDelivery> {
    const hook = await this.find(tenantId, id);
    const original = await this.deps.repo.findDelivery(hook.id, deliveryId);
    if (!original) throw new WebhookDeliveryNotFoundError();
    const delivery = await this.deps.repo.redeliver(original);
    this.deps.onQueued?.();
    await this.audit(tenantId, who, 'webhook.redelivered', hook, hook);
    return delivery;
  }

  async delete(tenantId: string, id: string, who?: StaffActor): Promise<void> {
    const before = who ? await this.find(tenantId, id) : null;
    if (!(await this.deps.repo.delete(tenantId, id))) throw new WebhookNotFoundError();
    this.deps.onChanged?.();
    await this.audit(tenantId, who, 'webhook.deleted', before, null);
  }

  /** Queues a `webhook.test` event for this hook only; it goes out like any other (signed, retried). */
  async test(tenantId: string, id: string, who?: StaffActor): Promise<WebhookDelivery> {
    const hook = await this.find(tenantId, id);
    const delivery = await this.deps.repo.enqueueForHook(hook, { eventId: randomUUID(), type: TEST_EVENT, data: { webhookId: hook.id } });
    this.deps.onQueued?.();
    await this.audit(tenantId, who, 'webhook.tested', hook, hook);
    return delivery;
  }

  async deliveries(tenantId: string, id: string, opts: { take: number; before?: { createdAt: Date; id: string } }): Promise<DeliveryWithAttempts[]> {
    const hook = await this.find(tenantId, id);
    return this.deps.repo.listDeliveries(hook.id, opts);
  }
}
