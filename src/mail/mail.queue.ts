import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { AppConfig } from '../config/index.js';
import type { Logger } from '../logger.js';
import { errorMessage } from './mail.sender.js';
import {
  DEFAULT_RETRY_POLICY,
  PermanentMailError,
  parseMailJob,
  type MailJob,
  type MailQueue,
  type MailSender,
  type RetryPolicy,
} from './mail.types.js';

export interface MailQueueOptions {
  /** Tries per job and the base of the exponential backoff. Default 5 tries, 2 s (2, 4, 8, 16 s). */
  retry?: Partial<RetryPolicy>;
  /** BullMQ queue name. Default `mail`. */
  queueName?: string;
  /** BullMQ key prefix in Redis. Default `bull`. Tests use a random one. */
  prefix?: string;
  /** Jobs one worker (or the in-process queue) delivers at the same time. Default 5. */
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
}

export interface MailQueueDeps {
  config: Pick<AppConfig, 'redisUrl' | 'mailWorker'>;
  sender: MailSender;
  logger: Logger;
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

/** The wait after the n-th failed attempt (n >= 1); the same formula as BullMQ's `exponential` backoff. */
export function retryDelayMs(policy: RetryPolicy, attemptsMade: number): number {
  return Math.round(2 ** (attemptsMade - 1) * policy.backoffMs);
}

/**
 * With `redisUrl`: a BullMQ queue, plus a worker in this process when `mailWorker` is `inline`
 * (with `external`, `npm run worker` delivers). Without Redis: an in-process queue with the same
 * retry rules; its jobs are lost if the process dies.
 */
export function createMailQueue(deps: MailQueueDeps): MailQueue {
  if (!deps.config.redisUrl) {
    if (deps.config.mailWorker === 'external') {
      deps.logger.warn('MAIL_WORKER=external needs REDIS_URL; delivering mail in this process instead');
    }
    return createInProcessMailQueue(deps);
  }
  return createBullMailQueue(deps, deps.config.redisUrl);
}

/** Processes the BullMQ mail queue; `src/worker.ts` runs one, and so does `createMailQueue` with MAIL_WORKER=inline. */
export function startMailWorker(deps: Omit<MailQueueDeps, 'config'> & { config: Pick<AppConfig, 'redisUrl'> }): MailWorker {
  const { sender, logger, options = {} } = deps;
  if (!deps.config.redisUrl) throw new Error('startMailWorker needs REDIS_URL');
  const connection = redisConnection(deps.config.redisUrl, logger);
  const worker = new Worker<MailJob>(
    options.queueName ?? DEFAULT_QUEUE_NAME,
    async (job: Job<MailJob>) => {
      try {
        await sender.send(parseMailJob(job.data));
      } catch (err) {
        // BullMQ skips the remaining attempts only for its own error class.
        if (err instanceof PermanentMailError) throw new UnrecoverableError(err.message);
        throw err;
      }
    },
    {
      connection,
      prefix: options.prefix,
      concurrency: options.concurrency ?? DEFAULT_CONCURRENCY,
      lockDuration: options.lockDurationMs ?? DEFAULT_LOCK_DURATION_MS,
      stalledInterval: options.stalledIntervalMs ?? DEFAULT_STALLED_INTERVAL_MS,
      maxStalledCount: options.maxStalledCount ?? DEFAULT_MAX_STALLED_COUNT,
    },
  );
  worker.on('error', (err) => logger.error({ err: errorMessage(err) }, 'mail worker error'));
  worker.on('failed', (job, err) => {
    if (!job) return;
    const attempts = job.opts.attempts ?? 1;
    const final = err instanceof UnrecoverableError || job.attemptsMade >= attempts;
    const backoff = typeof job.opts.backoff === 'object' ? job.opts.backoff.delay : job.opts.backoff;
    logAttemptFailure(logger, {
      jobId: job.id,
      job: job.data,
      attempt: job.attemptsMade,
      attempts,
      retryInMs: final ? undefined : retryDelayMs({ attempts, backoffMs: backoff ?? 0 }, job.attemptsMade),
      err,
    });
  });
  let closing: Promise<void> | undefined;
  return {
    ready: () => worker.waitUntilReady().then(() => undefined),
    close() {
      closing ??= (async () => {
        try {
          await worker.close();
        } finally {
          await quit(connection);
        }
      })();
      return closing;
    },
  };
}

function createBullMailQueue(deps: MailQueueDeps, redisUrl: string): MailQueue {
  const { logger, options = {} } = deps;
  const retry = retryPolicy(options);
  const connection = redisConnection(redisUrl, logger, { failFast: true });
  const queue = new Queue<MailJob>(options.queueName ?? DEFAULT_QUEUE_NAME, {
    connection,
    prefix: options.prefix,
    defaultJobOptions: {
      attempts: retry.attempts,
      backoff: { type: 'exponential', delay: retry.backoffMs },
      removeOnComplete: true,
      // Job data holds OTPs, so failed jobs are not kept either; the log has the trail.
      removeOnFail: true,
    },
  });
  queue.on('error', (err) => logger.error({ err: errorMessage(err) }, 'mail queue error'));
  const worker = deps.config.mailWorker === 'inline' ? startMailWorker(deps) : undefined;
  const enqueueTimeoutMs = options.enqueueTimeoutMs ?? DEFAULT_ENQUEUE_TIMEOUT_MS;
  let closing: Promise<void> | undefined;

  return {
    async enqueue(input) {
      if (closing) throw new Error('mail queue is closed');
      const job = parseMailJob(input);
      await withTimeout(queue.add(job.template, job), enqueueTimeoutMs, 'mail queue: Redis did not accept the job in time');
    },
    close() {
      closing ??= (async () => {
        try {
          await worker?.close();
          await queue.close();
        } finally {
          await quit(connection);
        }
      })();
      return closing;
    },
  };
}

interface QueuedMail {
  id: string;
  job: MailJob;
  attemptsMade: number;
}

/** The queue without Redis: same interface, same retry and backoff rules, jobs kept in memory. */
export function createInProcessMailQueue(deps: Omit<MailQueueDeps, 'config'>): MailQueue {
  const { sender, logger, options = {} } = deps;
  const retry = retryPolicy(options);
  const concurrency = Math.max(1, options.concurrency ?? DEFAULT_CONCURRENCY);
  const ready: QueuedMail[] = [];
  const retryTimers = new Set<NodeJS.Timeout>();
  let active = 0;
  let unfinished = 0;
  let nextId = 1;
  let closed = false;
  let whenIdle: Array<() => void> = [];

  function pump(): void {
    while (active < concurrency && ready.length > 0) {
      const entry = ready.shift() as QueuedMail;
      active++;
      void attempt(entry).finally(() => {
        active--;
        pump();
      });
    }
  }

  async function attempt(entry: QueuedMail): Promise<void> {
    try {
      await sender.send(entry.job);
      finished();
    } catch (err) {
      entry.attemptsMade++;
      const final = err instanceof PermanentMailError || entry.attemptsMade >= retry.attempts;
      const retryInMs = final ? undefined : retryDelayMs(retry, entry.attemptsMade);
      logAttemptFailure(logger, { jobId: entry.id, job: entry.job, attempt: entry.attemptsMade, attempts: retry.attempts, retryInMs, err });
      if (retryInMs === undefined) {
        finished();
        return;
      }
      const timer = setTimeout(() => {
        retryTimers.delete(timer);
        ready.push(entry);
        pump();
      }, retryInMs);
      retryTimers.add(timer);
    }
  }

  function finished(): void {
    unfinished--;
    if (unfinished === 0) {
      const waiting = whenIdle;
      whenIdle = [];
      for (const resolve of waiting) resolve();
    }
  }

  return {
    async enqueue(input) {
      if (closed) throw new Error('mail queue is closed');
      const job = parseMailJob(input);
      unfinished++;
      ready.push({ id: `local-${nextId++}`, job, attemptsMade: 0 });
      // Rendering and sending start after the caller (usually a request) has moved on.
      setImmediate(pump);
    },
    close() {
      closed = true;
      if (unfinished === 0) return Promise.resolve();
      return new Promise<void>((resolve) => whenIdle.push(resolve));
    },
  };
}

function retryPolicy(options: MailQueueOptions): RetryPolicy {
  return {
    attempts: Math.max(1, options.retry?.attempts ?? DEFAULT_RETRY_POLICY.attempts),
    backoffMs: Math.max(0, options.retry?.backoffMs ?? DEFAULT_RETRY_POLICY.backoffMs),
  };
}

function logAttemptFailure(
  logger: Logger,
  f: { jobId: string | undefined; job: MailJob; attempt: number; attempts: number; retryInMs: number | undefined; err: unknown },
): void {
  // Template and recipients only: the params may hold an OTP.
  const fields = { jobId: f.jobId, template: f.job.template, to: f.job.to, attempt: f.attempt, attempts: f.attempts, err: errorMessage(f.err) };
  if (f.retryInMs === undefined) logger.error(fields, 'mail delivery failed; giving up');
  else logger.warn({ ...fields, retryInMs: f.retryInMs }, 'mail delivery failed; will retry');
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

async function quit(connection: Redis): Promise<void> {
  try {
    await connection.quit();
  } catch {
    connection.disconnect();
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
