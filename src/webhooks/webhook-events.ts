import { randomUUID } from 'node:crypto';
import type { Logger } from '../logger.js';
import type { WebhookRepository } from '../persistence/webhook.repository.js';

/**
 * The events a tenant's webhooks can receive. `login.*` fire on every attempt, so a hook gets them
 * only when it lists them (opt-in); a hook registered without `events` gets all the others.
 */
export const WEBHOOK_EVENTS = [
  'account.locked',
  'account.unlocked',
  'account.activated',
  'account.deleted',
  'account.password_reset',
  'secret_question.changed',
  'device.added',
  'device.verified',
  'device.changed',
  'device.deleted',
  'devices.replaced',
  'login_method.changed',
  'login.succeeded',
  'login.failed',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENTS)[number];
export const OPT_IN_EVENTS: readonly WebhookEventType[] = ['login.succeeded', 'login.failed'];
export const DEFAULT_EVENTS: readonly WebhookEventType[] = WEBHOOK_EVENTS.filter((e) => !OPT_IN_EVENTS.includes(e));
/** What `POST /webhooks/{id}/test` sends (to that hook only). */
export const TEST_EVENT = 'webhook.test';

export type EventData = Record<string, string | number | boolean | null>;

/** Account events (AccountEventService) that are also webhook events. */
const FROM_ACCOUNT_EVENT: Record<string, WebhookEventType> = {
  unlocked: 'account.unlocked',
  activation_completed: 'account.activated',
  device_added: 'device.added',
  device_verified: 'device.verified',
  device_changed: 'device.changed',
  device_deleted: 'device.deleted',
  login_method_changed: 'login_method.changed',
  password_reset: 'account.password_reset',
  secret_question_changed: 'secret_question.changed',
};
const NO_ACCOUNT = '00000000-0000-0000-0000-000000000000';
// Only these details of an account event go out (never an address, a code or an internal id).
const SAFE_DETAIL = ['number', 'kind', 'from', 'to', 'via'];
// Fewer for some: which secret question an account chose narrows the guess of its answer.
const DETAIL_OF: Partial<Record<WebhookEventType, readonly string[]>> = { 'secret_question.changed': [] };

/**
 * Emits webhook events: each is one INSERT into the delivery queue (src/webhooks/webhook-delivery.ts
 * sends it later, with retries). Emitting never throws and never waits for a receiver: a failure is
 * logged and the request that caused the event goes on.
 */
export class WebhookEvents {
  private queued: () => void = () => {};
  /** Tenants with a hook that opted in to login events, as last read, and when. */
  private loginHooks: { tenants: Promise<Set<string>>; readAt: number } | undefined;

  constructor(
    private readonly repo: Pick<WebhookRepository, 'enqueueForTenant' | 'enqueueForAccount' | 'tenantsWithLoginHooks'>,
    private readonly logger: Logger,
    /**
     * How long the list of tenants with login hooks is trusted (default 5 s): a login costs no
     * statement for the webhooks of a tenant without such a hook. A hook registered on another
     * instance gets login events from at most this long after its registration; on this one, at once.
     */
    private readonly loginHooksTtlMs = 5_000,
  ) {}

  /** Hooks changed here: the next login event reads the tenants with login hooks again. */
  hooksChanged(): void {
    this.loginHooks = undefined;
  }

  private tenantsWithLoginHooks(): Promise<Set<string>> {
    const now = Date.now();
    if (!this.loginHooks || now - this.loginHooks.readAt > this.loginHooksTtlMs) {
      const tenants = this.repo.tenantsWithLoginHooks().then((ids) => new Set(ids));
      // A failed read is not kept: the next event tries again.
      tenants.catch(() => {
        if (this.loginHooks?.tenants === tenants) this.loginHooks = undefined;
      });
      this.loginHooks = { tenants, readAt: now };
    }
    return this.loginHooks.tenants;
  }

  /** Called after an event was queued here (the in-process delivery worker starts at once). */
  onQueued(listener: () => void): void {
    this.queued = listener;
  }

  /** Tells the listener of a delivery queued another way (a test delivery). */
  notifyQueued(): void {
    this.queued();
  }

  emit(tenantId: string, type: WebhookEventType, data: EventData): Promise<void> {
    return this.guard(type, () => this.repo.enqueueForTenant(tenantId, { eventId: randomUUID(), type, data }));
  }

  /** An event of an account known by its id; the payload's `userId` is read from the account row. */
  emitForAccount(accountId: string, type: WebhookEventType, data: EventData = {}): Promise<void> {
    return this.guard(type, () => this.repo.enqueueForAccount(accountId, { eventId: randomUUID(), type, data }));
  }

  /** The webhook event matching an account event, if there is one. */
  fromAccountEvent(e: { accountId: string; type: string; detail?: Record<string, string | number | boolean | null> }): Promise<void> {
    const type = FROM_ACCOUNT_EVENT[e.type];
    if (!type) return Promise.resolve();
    // An unlock of an account that was not locked changed nothing.
    if (type === 'account.unlocked' && e.detail?.wasLocked === false) return Promise.resolve();
    const data: EventData = {};
    for (const key of DETAIL_OF[type] ?? SAFE_DETAIL) if (e.detail && key in e.detail) data[key] = e.detail[key] ?? null;
    return this.emitForAccount(e.accountId, type, data);
  }

  /**
   * A login attempt of a known account (an unknown user ID is nobody's event). Only tenants with a
   * hook that opted in to login events get a statement; there, an unknown user ID runs the same one
   * (it finds no account), so a step takes as long for unknown IDs as for known ones.
   */
  async fromLoginEvent(e: { tenantId: string; accountId: string | null; result: string; method: string | null; clientId: string | null; sourceIp: string | null }): Promise<void> {
    try {
      if (!(await this.tenantsWithLoginHooks()).has(e.tenantId)) return;
    } catch (err) {
      this.logger.warn({ err }, 'webhook event could not be queued');
      return;
    }
    const type = e.result === 'success' ? 'login.succeeded' : 'login.failed';
    return this.emitForAccount(e.accountId ?? NO_ACCOUNT, type, { result: e.result, method: e.method, clientId: e.clientId, sourceIp: e.sourceIp });
  }

  private async guard(type: string, insert: () => Promise<number>): Promise<void> {
    try {
      if ((await insert()) > 0) this.queued();
    } catch (err) {
      this.logger.warn({ err, type }, 'webhook event could not be queued');
    }
  }
}
