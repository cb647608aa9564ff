import { randomUUID } from 'node:crypto';
import type { Prisma, PrismaClient, Webhook, WebhookAttempt, WebhookDelivery } from './generated/client.js';
import type { Sql } from './sql.js';

export type { Webhook, WebhookAttempt, WebhookDelivery } from './generated/client.js';

export interface NewWebhook {
  tenantId: string;
  url: string;
  events: string[];
  description: string | null;
  sealedSecret: string;
  createdBy: string | null;
}

/** An event to queue for every hook of the tenant that subscribed to its type. */
export interface QueuedEvent {
  eventId: string;
  type: string;
  data: Record<string, string | number | boolean | null>;
}

/** A delivery taken for one attempt, with its hook's URL and sealed secret; `attempts` counts this one. */
export interface ClaimedDelivery {
  id: string;
  webhookId: string;
  tenantId: string;
  eventId: string;
  eventType: string;
  data: Record<string, unknown>;
  attempts: number;
  createdAt: Date;
  url: string;
  sealedSecret: string;
  /** The secret before a rotation, while it still signs (a second v1); null otherwise. */
  previousSealedSecret: string | null;
}

/** What a PATCH may change; `enabled: true` also clears the failure count. */
export interface WebhookChange {
  url?: string;
  events?: string[];
  description?: string | null;
  enabled?: boolean;
}

/** The delivery backlog as /metrics shows it. */
export interface WebhookQueueFigures {
  /** Deliveries waiting to be sent (a disabled hook's events wait for it to be turned on and are not counted). */
  pending: number;
  /** Age of the oldest of them, in seconds; 0 when none waits. */
  oldestSeconds: number;
  /** Deliveries given up (kept 30 days in the delivery log). */
  failed: number;
  /** Hooks turned off (by their failures or by PATCH). */
  disabledHooks: number;
}

export type DeliveryWithAttempts = WebhookDelivery & { attemptLog: WebhookAttempt[] };

export type AttemptOutcome = { kind: 'delivered' } | { kind: 'retry'; at: Date } | { kind: 'failed' };

/**
 * Webhooks and their delivery queue. Queuing an event is one INSERT … SELECT over the tenant's hooks
 * (nothing when none subscribed); instances take due deliveries with a lease (FOR UPDATE SKIP LOCKED),
 * as the mail outbox does, so a restart or a crash loses nothing and no two instances send one
 * delivery at once.
 */
export class WebhookRepository {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly sql: Sql,
  ) {}

  create(h: NewWebhook): Promise<Webhook> {
    return this.prisma.webhook.create({ data: h });
  }

  list(tenantId: string): Promise<Webhook[]> {
    return this.prisma.webhook.findMany({ where: { tenantId }, orderBy: [{ createdAt: 'desc' }, { id: 'desc' }] });
  }

  /** The hook, only within its tenant. */
  find(tenantId: string, id: string): Promise<Webhook | null> {
    if (!isUuid(id)) return Promise.resolve(null);
    return this.prisma.webhook.findFirst({ where: { id, tenantId } });
  }

  /** Deletes the hook with its deliveries; false when the tenant has no such hook. */
  async delete(tenantId: string, id: string): Promise<boolean> {
    if (!isUuid(id)) return false;
    const r = await this.prisma.webhook.deleteMany({ where: { id, tenantId } });
    return r.count > 0;
  }

  /** Queues the event for the tenant's hooks subscribed to its type; returns how many deliveries. */
  async enqueueForTenant(tenantId: string, e: QueuedEvent): Promise<number> {
    const rows = await this.sql.query<{ id: string }>(
      `INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_id, event_type, data)
       SELECT gen_random_uuid(), w.id, w.tenant_id, $2::uuid, $3, $4::jsonb FROM webhooks w
        WHERE w.tenant_id = $1 AND $3 = ANY(w.events) AND w.enabled
       RETURNING id::text`,
      [tenantId, e.eventId, e.type, JSON.stringify(e.data)],
    );
    return rows.length;
  }

  /** Tenants with a hook subscribed to a login event (login.succeeded or login.failed). */
  async tenantsWithLoginHooks(): Promise<string[]> {
    const rows = await this.sql.query<{ tenant_id: string }>(`SELECT DISTINCT tenant_id FROM webhooks WHERE enabled AND events && ARRAY['login.succeeded', 'login.failed']`);
    return rows.map((r) => r.tenant_id);
  }

  /** As enqueueForTenant, for an event known by the account's id: its tenant and user ID come from the account row. */
  async enqueueForAccount(accountId: string, e: QueuedEvent): Promise<number> {
    if (!isUuid(accountId)) return 0;
    const rows = await this.sql.query<{ id: string }>(
      `INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_id, event_type, data)
       SELECT gen_random_uuid(), w.id, w.tenant_id, $2::uuid, $3, jsonb_build_object('userId', a.user_id) || $4::jsonb
         FROM accounts a JOIN webhooks w ON w.tenant_id = a.tenant_id AND $3 = ANY(w.events) AND w.enabled
        WHERE a.id = $1::uuid
       RETURNING id::text`,
      [accountId, e.eventId, e.type, JSON.stringify(e.data)],
    );
    return rows.length;
  }

  /** Queues an event for one hook, whatever it subscribed to (a test delivery). */
  async enqueueForHook(hook: Webhook, e: QueuedEvent): Promise<WebhookDelivery> {
    return this.prisma.webhookDelivery.create({ data: { webhookId: hook.id, tenantId: hook.tenantId, eventId: e.eventId, eventType: e.type, data: e.data } });
  }

  /** Takes up to `limit` due deliveries for `leaseMs`, counting the attempt. One statement, so two instances never take the same one. */
  async claimDue(opts: { limit: number; leaseMs: number; token: string }): Promise<ClaimedDelivery[]> {
    const now = new Date();
    const rows = await this.sql.query<{
      id: string;
      webhook_id: string;
      tenant_id: string;
      event_id: string;
      event_type: string;
      data: Record<string, unknown>;
      attempts: number;
      created_at: Date;
      url: string;
      sealed_secret: string;
      previous_sealed_secret: string | null;
    }>(
      // A disabled hook's events wait; what staff send on purpose (a test, a redelivery) goes out.
      `UPDATE webhook_deliveries d SET locked_until = $1::timestamptz, lease_token = $2, attempts = d.attempts + 1
         FROM webhooks w
        WHERE w.id = d.webhook_id AND d.id IN (
          SELECT q.id FROM webhook_deliveries q JOIN webhooks h ON h.id = q.webhook_id
           WHERE q.status = 'pending' AND q.next_attempt_at <= $3::timestamptz AND (q.locked_until IS NULL OR q.locked_until <= $3::timestamptz)
             AND (h.enabled OR q.event_type = 'webhook.test' OR q.redelivery_of IS NOT NULL)
           ORDER BY q.next_attempt_at LIMIT $4
           FOR UPDATE OF q SKIP LOCKED)
       RETURNING d.id::text, d.webhook_id::text, d.tenant_id, d.event_id::text, d.event_type, d.data, d.attempts,
                 COALESCE(d.event_created_at, d.created_at) AS created_at, w.url, w.sealed_secret,
                 CASE WHEN w.previous_secret_expires_at > $3::timestamptz THEN w.previous_sealed_secret END AS previous_sealed_secret`,
      [new Date(now.getTime() + opts.leaseMs), opts.token, now, opts.limit],
    );
    return rows.map((r) => ({
      id: r.id,
      webhookId: r.webhook_id,
      tenantId: r.tenant_id,
      eventId: r.event_id,
      eventType: r.event_type,
      data: typeof r.data === 'string' ? (JSON.parse(r.data) as Record<string, unknown>) : r.data,
      attempts: Number(r.attempts),
      createdAt: r.created_at instanceof Date ? r.created_at : new Date(r.created_at),
      url: r.url,
      sealedSecret: r.sealed_secret,
      previousSealedSecret: r.previous_sealed_secret,
    }));
  }

  /**
   * Logs one attempt and moves the delivery on, in one statement; only while this instance holds its
   * lease. A delivery given up adds one to the hook's failures in a row and, at `disableAfter` (0:
   * never), turns the hook off; a delivered one sets the count back to 0. Returns true when this
   * attempt turned the hook off.
   */
  async recordAttempt(
    d: { id: string; token: string; number: number },
    attempt: { statusCode: number | null; error: string | null; durationMs: number },
    outcome: AttemptOutcome,
    disableAfter = 0,
  ): Promise<{ disabled: boolean }> {
    const error = attempt.error?.slice(0, 500) ?? null;
    const rows = await this.sql.query<{ disabled: boolean }>(
      `WITH attempt AS (
         INSERT INTO webhook_attempts (id, delivery_id, number, status_code, error, duration_ms)
         SELECT $3::uuid, id, $4, $5, $6, $7 FROM webhook_deliveries WHERE id = $1::uuid AND lease_token = $2
       ), moved AS (
         UPDATE webhook_deliveries SET
           status = $8, locked_until = NULL, last_status = $5, last_error = $6,
           next_attempt_at = COALESCE($9::timestamptz, next_attempt_at),
           delivered_at = CASE WHEN $8 = 'delivered' THEN now() ELSE delivered_at END,
           failed_at = CASE WHEN $8 = 'failed' THEN now() ELSE failed_at END
         WHERE id = $1::uuid AND lease_token = $2
         RETURNING webhook_id
       )
       UPDATE webhooks w SET
         consecutive_failures = CASE WHEN $8 = 'failed' THEN w.consecutive_failures + 1 ELSE 0 END,
         enabled = w.enabled AND NOT ($8 = 'failed' AND $10::int > 0 AND w.consecutive_failures + 1 >= $10::int),
         disabled_at = CASE WHEN w.enabled AND $8 = 'failed' AND $10::int > 0 AND w.consecutive_failures + 1 >= $10::int THEN now() ELSE w.disabled_at END
       FROM moved JOIN webhooks was ON was.id = moved.webhook_id
       WHERE w.id = moved.webhook_id AND ($8 = 'failed' OR ($8 = 'delivered' AND w.consecutive_failures <> 0))
       RETURNING (was.enabled AND NOT w.enabled) AS disabled`,
      [
        d.id,
        d.token,
        randomUUID(),
        d.number,
        attempt.statusCode,
        error,
        Math.round(attempt.durationMs),
        outcome.kind === 'retry' ? 'pending' : outcome.kind,
        outcome.kind === 'retry' ? outcome.at : null,
        disableAfter,
      ],
    );
    return { disabled: rows[0]?.disabled === true };
  }

  /** Changes the hook within its tenant; null when the tenant has no such hook. */
  async update(tenantId: string, id: string, change: WebhookChange): Promise<Webhook | null> {
    if (!isUuid(id)) return null;
    const data: Prisma.WebhookUpdateManyMutationInput = {
      ...(change.url !== undefined ? { url: change.url } : {}),
      ...(change.events !== undefined ? { events: change.events } : {}),
      ...(change.description !== undefined ? { description: change.description } : {}),
      ...(change.enabled === true ? { enabled: true, disabledAt: null, consecutiveFailures: 0 } : {}),
      ...(change.enabled === false ? { enabled: false, disabledAt: new Date() } : {}),
    };
    // Turning off a hook that is already off keeps the time it went off.
    const where: Prisma.WebhookWhereInput = change.enabled === false ? { id, tenantId, enabled: true } : { id, tenantId };
    const r = await this.prisma.webhook.updateMany({ where, data });
    if (r.count === 0 && change.enabled === false) {
      const { enabled: _e, ...rest } = change;
      return this.update(tenantId, id, rest);
    }
    return this.find(tenantId, id);
  }

  /**
   * Replaces the secret; the one it replaces keeps signing (a second v1) until `previousExpiresAt`.
   * A secret older than that one is dropped. False when the tenant has no such hook.
   */
  async rotateSecret(tenantId: string, id: string, sealedSecret: string, previousExpiresAt: Date): Promise<boolean> {
    if (!isUuid(id)) return false;
    // The right-hand sides read the row as it was: the old secret moves to previous_sealed_secret.
    const rows = await this.sql.query<{ id: string }>(
      `UPDATE webhooks SET previous_sealed_secret = sealed_secret, sealed_secret = $3, previous_secret_expires_at = $4::timestamptz
        WHERE id = $1::uuid AND tenant_id = $2 RETURNING id::text`,
      [id, tenantId, sealedSecret, previousExpiresAt],
    );
    return rows.length > 0;
  }

  /** One delivery of the hook (the hook already found within its tenant). */
  findDelivery(webhookId: string, deliveryId: string): Promise<WebhookDelivery | null> {
    if (!isUuid(deliveryId)) return Promise.resolve(null);
    return this.prisma.webhookDelivery.findFirst({ where: { id: deliveryId, webhookId } });
  }

  /** A new delivery of the same event (id, type, data, time), due now. */
  redeliver(d: WebhookDelivery): Promise<WebhookDelivery> {
    return this.prisma.webhookDelivery.create({
      data: {
        webhookId: d.webhookId,
        tenantId: d.tenantId,
        eventId: d.eventId,
        eventType: d.eventType,
        data: d.data as Prisma.InputJsonValue,
        eventCreatedAt: d.eventCreatedAt ?? d.createdAt,
        redeliveryOf: d.id,
      },
    });
  }

  /** The delivery backlog across tenants, for /metrics: one statement. */
  async queueFigures(): Promise<WebhookQueueFigures> {
    const [r] = await this.sql.query<{ pending: number | string; oldest: Date | string | null; failed: number | string; disabled: number | string }>(
      `SELECT
         (SELECT count(*) FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.status = 'pending' AND ${SENDABLE}) AS pending,
         (SELECT min(d.created_at) FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE d.status = 'pending' AND ${SENDABLE}) AS oldest,
         (SELECT count(*) FROM webhook_deliveries WHERE status = 'failed') AS failed,
         (SELECT count(*) FROM webhooks WHERE NOT enabled) AS disabled`,
    );
    const oldest = r?.oldest ? new Date(r.oldest) : null;
    return {
      pending: Number(r?.pending ?? 0),
      oldestSeconds: oldest ? Math.max(0, (Date.now() - oldest.getTime()) / 1000) : 0,
      failed: Number(r?.failed ?? 0),
      disabledHooks: Number(r?.disabled ?? 0),
    };
  }

  /** The hook's deliveries, newest first, each with its attempts. */
  listDeliveries(webhookId: string, opts: { take: number; before?: { createdAt: Date; id: string } }): Promise<DeliveryWithAttempts[]> {
    const where: Prisma.WebhookDeliveryWhereInput = { webhookId };
    const b = opts.before;
    return this.prisma.webhookDelivery.findMany({
      where: b ? { AND: [where, { OR: [{ createdAt: { lt: b.createdAt } }, { createdAt: b.createdAt, id: { lt: b.id } }] }] } : where,
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: opts.take,
      include: { attemptLog: { orderBy: { number: 'asc' } } },
    });
  }

  /** Purges finished deliveries (and their attempts) created before the cutoff. */
  async deleteFinishedBefore(cutoff: Date): Promise<number> {
    const r = await this.prisma.webhookDelivery.deleteMany({ where: { status: { in: ['delivered', 'failed'] }, createdAt: { lt: cutoff } } });
    return r.count;
  }
}

// Deliveries the worker sends: a hook turned on, or what staff sent on purpose (a test, a redelivery).
const SENDABLE = `(w.enabled OR d.event_type = 'webhook.test' OR d.redelivery_of IS NOT NULL)`;

const isUuid = (s: string) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s);
