import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { MailJob, MailQueue } from '../mail/mail.types.js';
import { isCodeTemplate } from '../mail/mail.types.js';

/** What the mail gauges read at scrape time. */
export interface MailQueueFigures {
  /** Messages not delivered yet (outbox `pending`, or BullMQ waiting, delayed, prioritized and active). */
  pending: number;
  /** Age of the oldest message waiting, in seconds; 0 when none waits. */
  oldestSeconds: number;
  /** Messages given up (the `failed` rows the outbox keeps for 30 days, BullMQ's included). */
  failed: number;
}

/** What the webhook gauges read at scrape time (WebhookRepository.queueFigures). */
export interface WebhookQueueFigures {
  /** Deliveries waiting, of hooks turned on. */
  pending: number;
  /** Age of the oldest of them, in seconds; 0 when none waits. */
  oldestSeconds: number;
  /** Deliveries given up (kept in the delivery log for 30 days). */
  failed: number;
  /** Hooks turned off (by their failures or by hand). */
  disabledHooks: number;
}

/** Connections of the PostgreSQL pool (pg's Pool counters). */
export interface PoolFigures {
  total: number;
  idle: number;
  waiting: number;
}

/**
 * What the services report (counters) and where the scrape-time gauges come from. Threaded through
 * the services as one object; without METRICS_TOKEN it is `noMetrics()`, and prom-client is never loaded.
 */
export interface Metrics {
  /** A login event (also the ones a repository inserts itself). */
  login(result: string, method: string | null): void;
  codeMailed(template: string): void;
  lockout(): void;
  rateLimitRefused(kind: string): void;
  request(method: string, route: string, status: number, seconds: number): void;
  /** Where the mail gauges come from (read at scrape time). */
  readMailQueueFrom(source: () => Promise<MailQueueFigures>): void;
  /** Where the webhook gauges come from (read at scrape time). */
  readWebhookQueueFrom(source: () => Promise<WebhookQueueFigures>): void;
  /** Where the pool gauge comes from; an embedded database has none. */
  readPoolFrom(source: () => PoolFigures | undefined): void;
  /** Where the housekeeping figures come from (this process's purges). */
  readHousekeepingFrom(source: () => HousekeepingFigures): void;
}

/** What this process's housekeeping has done since it started. */
export interface HousekeepingFigures {
  runs: number;
  skippedBecauseLocked: number;
  lastDurationMs: number | null;
  purged: Record<string, number>;
}

/** Metrics that can be scraped. */
export interface ScrapedMetrics extends Metrics {
  readonly contentType: string;
  /** The Prometheus text exposition of every metric, gauges read now. */
  render(): Promise<string>;
}

export function noMetrics(): Metrics {
  const none = () => {};
  return { login: none, codeMailed: none, lockout: none, rateLimitRefused: none, request: none, readMailQueueFrom: none, readWebhookQueueFrom: none, readPoolFrom: none, readHousekeepingFrom: none };
}

/**
 * The provider's Prometheus metrics, on a registry of their own per application (several apps in one
 * process, as in the tests, keep their own figures), with prom-client's default process metrics.
 * Counters move through the methods of `Metrics`; the mail and pool gauges are read when scraped.
 */
export async function createPrometheusMetrics(): Promise<ScrapedMetrics> {
  const { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } = await import('prom-client');
  const registry = new Registry();
  const registers = [registry];
  collectDefaultMetrics({ register: registry });
  let mailSource: (() => Promise<MailQueueFigures>) | undefined;
  let poolSource: (() => PoolFigures | undefined) | undefined;
  let webhookSource: (() => Promise<WebhookQueueFigures>) | undefined;
  let housekeepingSource: (() => HousekeepingFigures) | undefined;

  const logins = new Counter({ name: 'idp_logins_total', help: 'Login events recorded, by result and login method', labelNames: ['result', 'method'] as const, registers });
  const codesSent = new Counter({ name: 'idp_otp_codes_sent_total', help: 'Mails carrying a one-time password queued for delivery, by template', labelNames: ['template'] as const, registers });
  const lockouts = new Counter({ name: 'idp_lockouts_total', help: 'Accounts locked after too many consecutive failures', registers });
  const refusals = new Counter({ name: 'idp_rate_limit_refusals_total', help: 'Requests refused by a rate limit, by limit', labelNames: ['kind'] as const, registers });
  const requests = new Histogram({
    name: 'idp_http_request_duration_seconds',
    help: 'HTTP requests by method, route (path template or oidc-provider route name) and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  // One query serves the three mail gauges of a scrape: the first gauge collected runs it.
  let figures: Promise<MailQueueFigures | undefined> | undefined;
  const mailFigures = () => {
    figures ??= (mailSource?.() ?? Promise.resolve(undefined)).catch(() => undefined).finally(() => setImmediate(() => (figures = undefined)));
    return figures;
  };
  const mailGauge = (name: string, help: string, pick: (f: MailQueueFigures) => number) =>
    new Gauge({
      name,
      help,
      registers,
      async collect() {
        const f = await mailFigures();
        // A failed read (database or Redis down) shows as NaN, not as a stale or a zero figure.
        this.set(f ? pick(f) : Number.NaN);
      },
    });
  mailGauge('idp_mail_queue_depth', 'Mails waiting for delivery', (f) => f.pending);
  mailGauge('idp_mail_delivery_failures_total', 'Mails given up (kept listed for 30 days)', (f) => f.failed);
  mailGauge('idp_mail_oldest_undelivered_seconds', 'Age of the oldest mail waiting for delivery (0: none)', (f) => f.oldestSeconds);
  // The webhook queue likewise: one query per scrape for its four gauges.
  let hookFigures: Promise<WebhookQueueFigures | undefined> | undefined;
  const webhookFigures = () => {
    hookFigures ??= (webhookSource?.() ?? Promise.resolve(undefined)).catch(() => undefined).finally(() => setImmediate(() => (hookFigures = undefined)));
    return hookFigures;
  };
  const webhookGauge = (name: string, help: string, pick: (f: WebhookQueueFigures) => number) =>
    new Gauge({
      name,
      help,
      registers,
      async collect() {
        if (!webhookSource) return;
        const f = await webhookFigures();
        this.set(f ? pick(f) : Number.NaN);
      },
    });
  webhookGauge('idp_webhook_queue_depth', 'Webhook deliveries waiting (first attempt or retry) for hooks turned on', (f) => f.pending);
  webhookGauge('idp_webhook_oldest_pending_seconds', 'Age of the oldest webhook delivery waiting (0: none)', (f) => f.oldestSeconds);
  webhookGauge('idp_webhook_deliveries_given_up', 'Webhook deliveries given up after their last attempt (kept listed for 30 days)', (f) => f.failed);
  webhookGauge('idp_webhooks_disabled', 'Webhooks turned off (by deliveries given up in a row, or by hand)', (f) => f.disabledHooks);
  new Gauge({
    name: 'idp_db_pool_connections',
    help: 'PostgreSQL pool connections by state (total, idle, waiting clients)',
    labelNames: ['state'] as const,
    registers,
    collect() {
      const p = poolSource?.();
      if (!p) return;
      this.set({ state: 'total' }, p.total);
      this.set({ state: 'idle' }, p.idle);
      this.set({ state: 'waiting' }, p.waiting);
    },
  });

  // Housekeeping: counters kept by the housekeeper, read when scraped (one instance at a time purges).
  new Gauge({
    name: 'idp_housekeeping_purged_rows',
    help: 'Rows purged by this process since it started, by table (expired flows, codes, oidc-provider records, old login events and audit records)',
    labelNames: ['table'] as const,
    registers,
    collect() {
      const h = housekeepingSource?.();
      if (!h) return;
      for (const [table, n] of Object.entries(h.purged)) this.set({ table }, n);
    },
  });
  new Gauge({
    name: 'idp_housekeeping_runs',
    help: 'Housekeeping runs of this process: done, or skipped because another instance held the lock',
    labelNames: ['outcome'] as const,
    registers,
    collect() {
      const h = housekeepingSource?.();
      if (!h) return;
      this.set({ outcome: 'done' }, h.runs);
      this.set({ outcome: 'skipped' }, h.skippedBecauseLocked);
    },
  });
  new Gauge({
    name: 'idp_housekeeping_last_duration_seconds',
    help: "Duration of this process's last housekeeping run",
    registers,
    collect() {
      const ms = housekeepingSource?.().lastDurationMs;
      if (ms !== null && ms !== undefined) this.set(ms / 1000);
    },
  });

  return {
    contentType: registry.contentType,
    render: () => registry.metrics(),
    login: (result, method) => logins.inc({ result, method: method ?? 'none' }),
    codeMailed: (template) => codesSent.inc({ template }),
    lockout: () => lockouts.inc(),
    rateLimitRefused: (kind) => refusals.inc({ kind }),
    request: (method, route, status, seconds) => requests.observe({ method, route, status: String(status) }, seconds),
    readMailQueueFrom: (source) => void (mailSource = source),
    readWebhookQueueFrom: (source) => void (webhookSource = source),
    readPoolFrom: (source) => void (poolSource = source),
    readHousekeepingFrom: (source) => void (housekeepingSource = source),
  };
}

/** The mail queue, counting the code mails it accepts (login, recovery, activation, device proof). */
export function countingCodeMails(queue: MailQueue, metrics: Metrics): MailQueue {
  return {
    async enqueue(job: MailJob) {
      await queue.enqueue(job);
      if (isCodeTemplate(job.template)) metrics.codeMailed(job.template);
    },
    undelivered: (filter) => queue.undelivered(filter),
    close: () => queue.close(),
    ...(queue.stage ? { stage: countedStage(queue.stage.bind(queue), metrics) } : {}),
  };
}

/** MailQueue.stage, counting a code mail once the statement that stores it has. */
function countedStage(stage: NonNullable<MailQueue['stage']>, metrics: Metrics): NonNullable<MailQueue['stage']> {
  return (job) => {
    const staged = stage(job);
    if (!staged || !isCodeTemplate(job.template)) return staged;
    return {
      row: staged.row,
      stored() {
        staged.stored();
        metrics.codeMailed(job.template);
      },
    };
  };
}

export const METRICS_PATH = '/metrics';

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/**
 * GET /metrics in Prometheus' text format, for a caller presenting `Authorization: Bearer <token>`.
 * Without a configured token the path does not exist (404 from the handlers after this one).
 */
export function metricsEndpoint(opts: { metrics: ScrapedMetrics | undefined; token: string | undefined }) {
  const expected = opts.token ? digest(opts.token) : undefined;
  const metrics = opts.metrics;
  return async (ctx: Context, next: Next) => {
    if (ctx.path !== METRICS_PATH || !expected || !metrics) return next();
    ctx.set('Cache-Control', 'no-store');
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      ctx.status = 405;
      ctx.set('Allow', 'GET, HEAD');
      return;
    }
    const header = ctx.get('authorization');
    const presented = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
    // Both sides hashed to one length, so the comparison takes the same time whatever was sent.
    if (!presented || !timingSafeEqual(digest(presented), expected)) {
      ctx.status = 401;
      ctx.set('WWW-Authenticate', 'Bearer realm="metrics"');
      ctx.body = { error: 'unauthorized' };
      return;
    }
    ctx.type = metrics.contentType;
    ctx.body = await metrics.render();
  };
}

/**
 * Undelivered mail of a BullMQ queue (waiting, delayed, prioritized or being attempted) and the age of the oldest such job,
 * on a connection of its own opened at the first scrape; bullmq itself is loaded only then.
 */
export function bullmqMailBacklog(opts: { redisUrl: string; queueName: string; prefix?: string }): { read(): Promise<{ pending: number; oldestSeconds: number }>; close(): Promise<void> } {
  let opened: Promise<{ queue: import('bullmq').Queue; connection: import('ioredis').Redis }> | undefined;
  const open = () =>
    (opened ??= (async () => {
      const [{ Queue }, { Redis }] = await Promise.all([import('bullmq'), import('ioredis')]);
      // No offline queue: a scrape during a Redis outage fails at once instead of waiting.
      const connection = new Redis(opts.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 1000, lazyConnect: true });
      connection.on('error', () => {});
      await connection.connect().catch(() => undefined);
      return { queue: new Queue(opts.queueName, { connection, prefix: opts.prefix }), connection };
    })());
  // A job being attempted counts too, as an outbox row stays `pending` during its attempts.
  const kinds = ['waiting', 'delayed', 'prioritized', 'active'] as const;
  return {
    async read() {
      const { queue } = await open();
      const counts = await queue.getJobCounts(...kinds);
      const pending = kinds.reduce((n, k) => n + (counts[k] ?? 0), 0);
      if (pending === 0) return { pending, oldestSeconds: 0 };
      // The oldest of each kind (lists oldest first with asc; the delayed set by due time, close enough).
      const firsts = await Promise.all(kinds.map((k) => queue.getJobs([k], 0, 0, true)));
      const oldest = Math.min(...firsts.flat().map((j) => j.timestamp));
      return { pending, oldestSeconds: Number.isFinite(oldest) ? Math.max(0, (Date.now() - oldest) / 1000) : 0 };
    },
    async close() {
      if (!opened) return;
      const { queue, connection } = await opened;
      await queue.close().catch(() => undefined);
      await connection.quit().catch(() => connection.disconnect());
    },
  };
}
