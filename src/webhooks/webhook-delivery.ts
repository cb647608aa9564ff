import { serialPoll } from '../serial-poll.js';
import { randomUUID } from 'node:crypto';
import { sealedBox } from '../http/sealed-box.js';
import type { Logger } from '../logger.js';
import type { AttemptOutcome, ClaimedDelivery, WebhookRepository } from '../persistence/webhook.repository.js';
import { EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, signatureHeader } from './webhook-signature.js';
import { targetProblem, type TargetPolicy } from './webhook-target.js';

export interface WebhookDeliveryOptions {
  timeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  maxAttempts: number;
  pollMs: number;
  /** Deliveries one instance sends at the same time. Default 4. */
  concurrency?: number;
  /** Given-up deliveries in a row that turn a hook off (WEBHOOK_DISABLE_AFTER_FAILURES); 0 or absent: never. */
  disableAfterFailures?: number;
}

const DAY = 24 * 3_600_000;
// Finished deliveries stay a month in the delivery log.
const RETENTION_MS = 30 * DAY;

/** The sealed-box purpose of hook secrets (the cookie keys seal them, every key opens them). */
export const SECRET_PURPOSE = 'webhook-secret';

/** The wait before attempt `attempts + 1`: base × 2^(attempts−1), at most max. */
export function retryDelay(attempts: number, opts: Pick<WebhookDeliveryOptions, 'retryBaseMs' | 'retryMaxMs'>): number {
  return Math.min(opts.retryMaxMs, opts.retryBaseMs * 2 ** Math.max(0, attempts - 1));
}

/** The body of a delivery: the same bytes in every attempt (the signature's timestamp is what changes). */
export function deliveryBody(d: Pick<ClaimedDelivery, 'eventId' | 'eventType' | 'createdAt' | 'tenantId' | 'data'>): string {
  return JSON.stringify({ id: d.eventId, type: d.eventType, createdAt: d.createdAt.toISOString(), tenant: d.tenantId, data: d.data });
}

export interface WebhookDeliveryWorker {
  /** Look for due deliveries now (an event was just queued here). */
  kick(): void;
  close(): Promise<void>;
}

/**
 * The in-process delivery worker: it takes due deliveries with a lease, POSTs each signed event with
 * a timeout, logs the attempt, and schedules a retry with exponential backoff until the hook's
 * receiver answers 2xx or the attempts run out. Every instance runs one; they share the queue.
 */
export function startWebhookDelivery(deps: {
  repo: WebhookRepository;
  logger: Logger;
  cookieKeys: string[];
  target: TargetPolicy;
  options: WebhookDeliveryOptions;
  fetch?: typeof fetch;
}): WebhookDeliveryWorker {
  const { repo, logger, options } = deps;
  const box = sealedBox(deps.cookieKeys, SECRET_PURPOSE);
  const doFetch = deps.fetch ?? globalThis.fetch;
  const concurrency = Math.max(1, options.concurrency ?? 4);
  // Longer than any attempt, so a lease never runs out while its request is still in flight.
  const leaseMs = options.timeoutMs + 30_000;
  const token = randomUUID();
  const inHand = new Set<Promise<void>>();
  const polls = serialPoll(poll, (err: unknown) => logger.warn({ err }, 'webhooks: polling the delivery queue failed'));
  const kick = polls.kick;
  let lastPurge = 0;

  const timer = setInterval(() => kick(), options.pollMs);
  timer.unref();

  async function poll(): Promise<void> {
    const free = concurrency - inHand.size;
    if (free <= 0) return;
    const rows = await repo.claimDue({ limit: free, leaseMs, token });
    for (const row of rows) {
      const running: Promise<void> = deliver(row)
        .catch((err: unknown) => logger.error({ err, id: row.id }, 'webhooks: recording a delivery attempt failed'))
        .finally(() => {
          inHand.delete(running);
          kick();
        });
      inHand.add(running);
    }
    await purge();
  }

  async function attempt(row: ClaimedDelivery): Promise<{ statusCode: number | null; error: string | null }> {
    const refused = await targetProblem(row.url, deps.target);
    if (refused) return { statusCode: null, error: `target refused (${refused})` };
    const secret = box.open(row.sealedSecret);
    if (typeof secret !== 'string') return { statusCode: null, error: 'the hook secret cannot be opened (COOKIE_KEYS changed?)' };
    // During a rotation's grace period the previous secret signs too, so receivers can switch at leisure.
    const previous = row.previousSealedSecret === null ? undefined : box.open(row.previousSealedSecret);
    const secrets = typeof previous === 'string' ? [secret, previous] : [secret];
    const body = deliveryBody(row);
    try {
      const res = await doFetch(row.url, {
        method: 'POST',
        redirect: 'manual',
        signal: AbortSignal.timeout(options.timeoutMs),
        headers: {
          'content-type': 'application/json',
          'user-agent': 'AnshinLogin-Webhooks/1.0',
          [SIGNATURE_HEADER]: signatureHeader(secrets, body),
          [EVENT_ID_HEADER]: row.eventId,
          [EVENT_TYPE_HEADER]: row.eventType,
        },
        body,
      });
      // The answer's body is not needed; dropping it frees the connection.
      await res.body?.cancel().catch(() => {});
      return { statusCode: res.status, error: res.ok ? null : `HTTP ${res.status}` };
    } catch (e) {
      const err = e as Error & { cause?: { code?: string; message?: string } };
      const reason = err.name === 'TimeoutError' ? `timed out after ${options.timeoutMs} ms` : (err.cause?.code ?? err.cause?.message ?? err.message);
      return { statusCode: null, error: reason };
    }
  }

  async function deliver(row: ClaimedDelivery): Promise<void> {
    const started = performance.now();
    const result = await attempt(row);
    const durationMs = performance.now() - started;
    let outcome: AttemptOutcome;
    if (result.error === null) outcome = { kind: 'delivered' };
    else if (row.attempts >= options.maxAttempts) outcome = { kind: 'failed' };
    else outcome = { kind: 'retry', at: new Date(Date.now() + retryDelay(row.attempts, options)) };
    const { disabled } = await repo.recordAttempt({ id: row.id, token, number: row.attempts }, { ...result, durationMs }, outcome, options.disableAfterFailures ?? 0);
    if (disabled) logger.warn({ webhookId: row.webhookId, failures: options.disableAfterFailures }, 'webhooks: hook disabled after deliveries given up in a row');
    if (outcome.kind === 'retry') {
      // On time rather than at the next poll (any instance may take it then).
      setTimeout(kick, Math.max(0, outcome.at.getTime() - Date.now())).unref();
    } else if (outcome.kind === 'failed') {
      logger.warn({ id: row.id, webhookId: row.webhookId, type: row.eventType, attempts: row.attempts, error: result.error }, 'webhooks: delivery given up');
    }
  }

  async function purge(): Promise<void> {
    if (Date.now() - lastPurge < 3_600_000) return;
    lastPurge = Date.now();
    const purged = await repo.deleteFinishedBefore(new Date(Date.now() - RETENTION_MS));
    if (purged) logger.info({ purged }, 'webhooks: purged old deliveries');
  }

  // Deliveries queued while no instance ran (or by the admin CLI) go out at start.
  setImmediate(kick);

  return {
    kick: () => setImmediate(kick),
    async close() {
      polls.stop();
      clearInterval(timer);
      await polls.idle();
      // Deliveries in flight finish (each is bounded by the timeout); the rest wait in the queue.
      await Promise.all(inHand);
    },
  };
}
