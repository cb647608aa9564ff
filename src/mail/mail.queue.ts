import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { AppConfig } from '../config/index.js';
import type { Logger } from '../logger.js';
import { claimedInsert, type ClaimedMailMessage } from '../persistence/mail-outbox.repository.js';
import { attemptDelivery, markCodeUndelivered, retryPolicy, type MailStore } from './mail.delivery.js';
import { isMailEnvelope, mailSealer, type MailEnvelope, type MailSealer } from './mail.envelope.js';
import { createOutboxMailQueue, envelopeOfRow, undeliveredOf, type OutboxOptions } from './mail.outbox.js';
import { errorMessage } from './mail.sender.js';
import { deliverByOf, parseMailJob, retryDelayMs, type MailJob, type MailQueue, type MailSender, type MailTemplate, type RetryPolicy, type StagedMail, type UndeliveredMail } from './mail.types.js';

/** BullMQ, loaded only when Redis is configured: without REDIS_URL it would cost every process about 10 MiB. */
const bullmq = () => createRequire(import.meta.url)('bullmq') as typeof import('bullmq');

export type { MailStore } from './mail.delivery.js';

export interface MailQueueOptions {
  /** Backoff, its caps and how long mail is worth trying (see RetryPolicy for the defaults). */
  retry?: Partial<RetryPolicy>;
  /** BullMQ queue name. Default `mail`. */
  queueName?: string;
  /** BullMQ key prefix in Redis. Default `bull`. Tests use a random one. */
  prefix?: string;
  /** Jobs one worker (or the outbox) delivers at the same time. Default 5. */
  concurrency?: number;
  /** How long enqueue waits for Redis before failing, so a request does not hang while Redis is down. Default 5 s. */
  enqueueTimeoutMs?: number;
  /**
   * How long a worker's claim on a job lasts without renewal (renewed every half of it). A worker that
   * dies (kill -9, crash) holding a job leaves it for another after this plus `stalledIntervalMs`.
   * Default 4 s, so a code mail is late by seconds, not BullMQ's minute.
   */
  lockDurationMs?: number;
  /** How often a worker looks for jobs whose claim has lapsed and puts them back in the queue. Default 2 s. */
  stalledIntervalMs?: number;
  /** How many times a job may be taken back from a dead worker before it is given up. Default 3. */
  maxStalledCount?: number;
  /**
   * How long closing a worker waits for the jobs in hand (an SMTP delivery, or Redis coming back) before
   * it lets go; what it still held is taken up by another worker as stalled. Default 10 s.
   */
  closeGraceMs?: number;
  /**
   * The outbox table: without Redis, poll interval, lease and own mail only (see OutboxOptions). With
   * BullMQ, how often it is looked at for staged mail an instance died before handing to Redis, and
   * how long a staged row stays reserved for the instance that stored it (both default 5 s).
   */
  outbox?: Pick<OutboxOptions, 'pollMs' | 'leaseMs' | 'onlyOwn'>;
}

export interface MailQueueDeps {
  config: Pick<AppConfig, 'redisUrl' | 'mailWorker'>;
  sender: MailSender;
  logger: Logger;
  /** The outbox table (all mail without Redis; given-up mail with BullMQ) and the OTP rows to mark. */
  store: MailStore;
  /** Keys the payload at rest is sealed with (the cookie keys); every process of the deployment needs them. */
  sealKeys: string[];
  options?: MailQueueOptions;
}

export interface MailWorker {
  /** Resolves once the worker is connected and taking jobs. */
  ready(): Promise<void>;
  /** Finishes the jobs in hand (retries wait in Redis for the next worker), then disconnects. */
  close(): Promise<void>;
}

export const DEFAULT_QUEUE_NAME = 'mail';
const DEFAULT_CONCURRENCY = 5;
const DEFAULT_ENQUEUE_TIMEOUT_MS = 5_000;
const DEFAULT_LOCK_DURATION_MS = 4_000;
const DEFAULT_STALLED_INTERVAL_MS = 2_000;
const DEFAULT_MAX_STALLED_COUNT = 3;
const DEFAULT_CLOSE_GRACE_MS = 10_000;

// BullMQ looks a custom backoff up by this type name in the worker's settings.
const BACKOFF_TYPE = 'mail-deliver-by';

/**
 * With `redisUrl`: a BullMQ queue, plus a worker in this process when `mailWorker` is `inline`
 * (with `external`, `npm run worker` delivers). Without Redis: the outbox table in the database,
 * delivered by this process with the same retry rule.
 */
export function createMailQueue(deps: MailQueueDeps): MailQueue {
  if (!deps.config.redisUrl) {
    if (deps.config.mailWorker === 'external') {
      deps.logger.warn('MAIL_WORKER=external needs REDIS_URL; delivering mail in this process instead');
    }
    const { options = {} } = deps;
    return createOutboxMailQueue({ ...deps, options: { retry: options.retry, concurrency: options.concurrency, ...options.outbox } });
  }
  return createBullMailQueue(deps, deps.config.redisUrl);
}

/** Attempts that fit before deliverBy with the capped backoff, plus the first: BullMQ's `attempts` for the job. */
function attemptsBefore(policy: RetryPolicy, template: MailTemplate, deliverBy: number, now = Date.now()): number {
  let at = now;
  let n = 1;
  while (n < 100_000) {
    at += Math.max(1, retryDelayMs(policy, template, n));
    if (at >= deliverBy) break;
    n++;
  }
  // One spare: a late retry must reach the processor, which gives up (and records it) itself.
  return n + 1;
}

/** A job's data as sealed; jobs queued before sealing (plain MailJob) are sealed on the way. */
function envelopeOf(data: unknown, sealer: MailSealer, policy: RetryPolicy, queuedAt: number): MailEnvelope {
  if (isMailEnvelope(data)) return data;
  const job = parseMailJob(data);
  return sealer.seal(job, deliverByOf(policy, job, queuedAt));
}

/** Processes the BullMQ mail queue; `src/worker.ts` runs one, and so does `createMailQueue` with MAIL_WORKER=inline. */
export function startMailWorker(deps: Omit<MailQueueDeps, 'config'> & { config: Pick<AppConfig, 'redisUrl'> }): MailWorker {
  const { sender, logger, store, options = {} } = deps;
  if (!deps.config.redisUrl) throw new Error('startMailWorker needs REDIS_URL');
  const policy = retryPolicy(options.retry);
  const sealer = mailSealer(deps.sealKeys);
  const connection = redisConnection(deps.config.redisUrl, logger);
  const closeGraceMs = options.closeGraceMs ?? DEFAULT_CLOSE_GRACE_MS;
  const { Worker, UnrecoverableError } = bullmq();
  const worker = new Worker<unknown>(
    options.queueName ?? DEFAULT_QUEUE_NAME,
    async (job: Job<unknown>) => {
      let envelope: MailEnvelope;
      try {
        envelope = envelopeOf(job.data, sealer, policy, job.timestamp);
      } catch (err) {
        logger.error({ jobId: job.id, err: errorMessage(err) }, 'mail delivery failed; giving up');
        throw new UnrecoverableError(errorMessage(err));
      }
      const outcome = await attemptDelivery({ sender, sealer, policy, logger }, { jobId: job.id, envelope, template: envelope.template, deliverBy: envelope.deliverBy, attempt: job.attemptsMade + 1 });
      if (outcome.kind === 'retry') throw new Error(outcome.error);
      if (outcome.kind === 'failed') {
        await recordGivenUp(store, logger, envelope, job.attemptsMade + 1, outcome.error, job.timestamp);
        // BullMQ skips the remaining attempts only for its own error class.
        throw new UnrecoverableError(outcome.error);
      }
    },
    {
      connection,
      prefix: options.prefix,
      concurrency: options.concurrency ?? DEFAULT_CONCURRENCY,
      lockDuration: options.lockDurationMs ?? DEFAULT_LOCK_DURATION_MS,
      stalledInterval: options.stalledIntervalMs ?? DEFAULT_STALLED_INTERVAL_MS,
      maxStalledCount: options.maxStalledCount ?? DEFAULT_MAX_STALLED_COUNT,
      settings: { backoffStrategy: (attemptsMade: number, _type?: string, _err?: Error, job?: { data: unknown }) => retryDelayMs(policy, isMailEnvelope(job?.data) ? job.data.template : 'login-otp', attemptsMade) },
    },
  );
  worker.on('error', (err) => logger.error({ err: errorMessage(err) }, 'mail worker error'));
  let closing: Promise<void> | undefined;
  return {
    ready: () => worker.waitUntilReady().then(() => undefined),
    close() {
      closing ??= (async () => {
        // Jobs in hand get a grace period; a worker cut off from Redis would otherwise wait for it forever
        // (and a stopping process with it). A job it still held goes back to the queue as stalled.
        const graceful = worker.close().then(() => true);
        const finished = await Promise.race([graceful, delay(closeGraceMs).then(() => false)]);
        if (!finished) {
          logger.warn({ graceMs: closeGraceMs }, 'mail worker: closing without waiting any longer for Redis or the jobs in hand');
          void worker.close(true).catch(() => {});
          graceful.catch(() => {});
          connection.disconnect();
          return;
        }
        await quit(connection);
      })();
      return closing;
    },
  };
}

/** A job BullMQ gives up is written to the outbox table without payload, so operators list it; its code is marked. */
async function recordGivenUp(store: MailStore, logger: Logger, e: MailEnvelope, attempts: number, lastError: string, queuedAt: number): Promise<void> {
  try {
    await store.outbox.recordFailed({
      template: e.template,
      tenantId: e.tenantId,
      otpId: e.otpId,
      recipients: e.recipients,
      maskedTo: e.maskedTo,
      deliverBy: new Date(e.deliverBy),
      attempts,
      lastError,
      createdAt: new Date(queuedAt),
    });
  } catch (err) {
    logger.warn({ err: errorMessage(err), template: e.template }, 'could not record the given-up mail in the outbox table');
  }
  await markCodeUndelivered(store, logger, e.otpId);
}

function createBullMailQueue(deps: MailQueueDeps, redisUrl: string): MailQueue {
  const { logger, store, options = {} } = deps;
  const policy = retryPolicy(options.retry);
  const sealer = mailSealer(deps.sealKeys);
  const connection = redisConnection(redisUrl, logger, { failFast: true });
  const { Queue } = bullmq();
  const queue = new Queue<MailEnvelope>(options.queueName ?? DEFAULT_QUEUE_NAME, {
    connection,
    prefix: options.prefix,
    defaultJobOptions: {
      backoff: { type: BACKOFF_TYPE },
      removeOnComplete: true,
      // Given-up jobs are recorded in the outbox table without payload; Redis keeps nothing of them.
      removeOnFail: true,
    },
  });
  queue.on('error', (err) => logger.error({ err: errorMessage(err) }, 'mail queue error'));
  const worker = deps.config.mailWorker === 'inline' ? startMailWorker(deps) : undefined;
  const enqueueTimeoutMs = options.enqueueTimeoutMs ?? DEFAULT_ENQUEUE_TIMEOUT_MS;
  let closing: Promise<void> | undefined;

  const add = (envelope: MailEnvelope, jobId?: string) => {
    const attempts = attemptsBefore(policy, envelope.template, envelope.deliverBy);
    return withTimeout(queue.add(envelope.template, envelope, { attempts, ...(jobId ? { jobId } : {}) }), enqueueTimeoutMs, 'mail queue: Redis did not accept the job in time');
  };

  // Staged mail (a login code's): its row is stored by the code's own statement, reserved for this
  // instance, and handed to Redis after the response; the row then goes. An instance that dies in
  // between leaves the row, and any instance hands it over once the reservation lapses (the job id is
  // the row's, so BullMQ keeps one job if the first hand-over did reach Redis).
  const { outbox } = store;
  const pollMs = options.outbox?.pollMs ?? 5_000;
  const leaseMs = options.outbox?.leaseMs ?? 5_000;
  const token = randomUUID();
  const handing = new Set<Promise<void>>();
  // Both kinds of hand-over report their own failures; close() waits for those in progress.
  const track = (p: Promise<void>) => {
    const settled = p.catch(() => undefined);
    handing.add(settled);
    void settled.finally(() => handing.delete(settled));
  };

  async function handOver(row: ClaimedMailMessage): Promise<void> {
    const envelope = await envelopeOfRow(row, { outbox, logger, token });
    if (!envelope) return;
    await add(envelope, row.id);
    await outbox.release(row.id, token);
  }

  /** Staged rows whose instance never handed them over: taken (one instance each) and handed over. */
  let relaying = false;
  async function relay(): Promise<void> {
    if (relaying || closing) return;
    relaying = true;
    try {
      const rows = await outbox.claimDue({ limit: 20, leaseMs, token });
      for (const row of rows) {
        try {
          await handOver(row);
        } catch (err) {
          // The row stays; its reservation lapses and a later look hands it over.
          logger.warn({ err: errorMessage(err), id: row.id }, 'mail queue: handing a stored mail to Redis failed');
        }
      }
    } catch (err) {
      logger.warn({ err: errorMessage(err) }, 'mail queue: looking for stored mail to hand to Redis failed');
    } finally {
      relaying = false;
    }
  }
  const relayTimer = setInterval(() => track(relay()), pollMs);
  relayTimer.unref();

  function stage(input: MailJob): StagedMail | undefined {
    if (closing) return undefined;
    const job = parseMailJob(input);
    const envelope = sealer.seal(job, deliverByOf(policy, job));
    const row = claimedInsert({ ...envelope, deliverBy: new Date(envelope.deliverBy) }, { token, leaseMs });
    return {
      row,
      stored() {
        // Closing meanwhile: the row waits in the table for any instance's look once its reservation lapses.
        if (closing) return;
        track(
          (async () => {
            try {
              await add(envelope, row.id);
            } catch (err) {
              // As an enqueue that failed after the response: the code's page says it could not be sent.
              logger.error({ template: envelope.template, err: errorMessage(err) }, 'mail could not be queued');
              await outbox.markFailed(row.id, token, errorMessage(err)).catch(() => undefined);
              await markCodeUndelivered(store, logger, envelope.otpId);
              return;
            }
            await outbox.release(row.id, token).catch((err: unknown) => logger.warn({ err: errorMessage(err), id: row.id }, 'mail queue: removing a handed-over mail from the table failed'));
          })(),
        );
      },
    };
  }

  return {
    async enqueue(input) {
      if (closing) throw new Error('mail queue is closed');
      const job = parseMailJob(input);
      await add(sealer.seal(job, deliverByOf(policy, job)));
    },
    stage,
    async undelivered(filter = {}) {
      const limit = filter.limit ?? 100;
      const jobs = await queue.getJobs(['active', 'waiting', 'delayed', 'prioritized'], 0, limit - 1);
      const waiting = jobs
        .filter((j) => isMailEnvelope(j.data) && (!filter.tenantId || j.data.tenantId === filter.tenantId))
        .map(
          (j): UndeliveredMail => ({
            id: `bullmq:${j.id ?? ''}`,
            status: 'pending',
            template: j.data.template,
            tenantId: j.data.tenantId,
            recipients: j.data.recipients,
            maskedTo: j.data.maskedTo,
            createdAt: new Date(j.timestamp),
            deliverBy: new Date(j.data.deliverBy),
            attempts: j.attemptsMade,
            nextAttemptAt: new Date(j.timestamp + (j.delay ?? 0)),
            lastError: j.failedReason || null,
            source: 'bullmq',
          }),
        );
      const failed = (await store.outbox.listUndelivered(filter)).map(undeliveredOf);
      return [...waiting, ...failed].sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime()).slice(0, limit);
    },
    close() {
      closing ??= (async () => {
        try {
          clearInterval(relayTimer);
          await Promise.allSettled([...handing]);
          await worker?.close();
          await queue.close();
        } finally {
          await quit(connection);
          deps.sender.close();
        }
      })();
      return closing;
    },
  };
}

/**
 * BullMQ requires `maxRetriesPerRequest: null` for workers (they block on Redis). `failFast` is for the
 * producer: while Redis is down a job is refused at once rather than queued in memory, where it would
 * be added after the request had already been told it failed.
 */
function redisConnection(url: string, logger: Logger, opts: { failFast?: boolean } = {}): Redis {
  const connection = new Redis(url, opts.failFast ? { enableOfflineQueue: false, maxRetriesPerRequest: 1 } : { maxRetriesPerRequest: null });
  // Without a listener ioredis prints every reconnect error to stderr.
  connection.on('error', (err: Error) => logger.warn({ err: err.message }, 'mail queue: Redis connection error'));
  return connection;
}

/** QUIT, or a plain disconnect when Redis does not answer in a second (it may be down). */
async function quit(connection: Redis): Promise<void> {
  try {
    await withTimeout(connection.quit(), 1_000, 'QUIT timed out');
  } catch {
    connection.disconnect();
  }
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
