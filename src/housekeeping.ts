import { ACTIVATION_PURPOSE } from './activation/activation.service.js';
import type { AppServices } from './app.js';
import type { AppConfig } from './config/index.js';
import type { Logger } from './logger.js';
import type { PurgeOptions } from './persistence/purge.js';

const DAY_MS = 24 * 3600_000;

/** The advisory-lock key of housekeeping (Prisma Migrate's is 72707369; any other constant would do). */
export const HOUSEKEEPING_LOCK_KEY = 72707370;

export interface PurgeCounts {
  /** Login and recovery flows. */
  flows: number;
  /** One-time codes: those of the purged flows, superseded activation codes, and expired passkey challenges. */
  codes: number;
  payloads: number;
  loginEvents: number;
  /** Staff audit records past AUDIT_RETENTION_DAYS. */
  auditRecords: number;
}

export interface HousekeepingStats {
  /** Runs this instance completed (it held the lock). */
  runs: number;
  lastRunAt: Date | null;
  lastDurationMs: number | null;
  /** Rows this instance deleted since it started. */
  purged: PurgeCounts;
  /** Rows the last completed run deleted. */
  lastRun: PurgeCounts | null;
  /** Runs left to another instance that was running housekeeping at the time. */
  skippedBecauseLocked: number;
}

export interface HousekeepingOptions {
  /** Rows per DELETE (default 1000). */
  batchSize?: number;
  /** Pause between two batches of one table (default 50 ms). */
  pauseMs?: number;
  /** How long a superseded activation code is kept after its expiry (default one day). */
  codeGraceMs?: number;
  /** Replaces the wait between batches (tests hold a run open with it). */
  pause?: PurgeOptions['pause'];
  /** Told each batch's count (tests). `codes` batches are the superseded codes': flows' codes go in `flows` batches. */
  onBatch?: (table: keyof PurgeCounts, deleted: number) => void;
  /** Whether to run once at start (default true). */
  runAtStart?: boolean;
}

export type HousekeepingServices = Pick<AppServices, 'flows' | 'payloads' | 'events' | 'otpRepo' | 'passkeys' | 'exclusive'> & { audit: Pick<AppServices['audit'], 'purgeOlderThan'> };

/**
 * Purges expired login flows with their codes, superseded activation codes, expired oidc-provider
 * records, expired passkey challenges, login events past their retention (LOGIN_EVENT_RETENTION_DAYS)
 * and staff audit records past theirs (AUDIT_RETENTION_DAYS), in batches, on one
 * instance at a time: every instance ticks, the one that gets the advisory lock does the work and the
 * others count a skip. Runs once at start too, so a rarely running instance still purges. (Rate-limit
 * rows and finished outbox mail have their own sweepers: src/http/rate-limit.ts, src/mail/mail.outbox.ts.)
 */
export function startHousekeeping(services: HousekeepingServices, logger: Logger, config: Pick<AppConfig, 'loginEventRetentionDays' | 'auditRetentionDays'>, everyMs = 10 * 60_000, options: HousekeepingOptions = {}) {
  const batchSize = options.batchSize ?? 1000;
  const pauseMs = options.pauseMs ?? 50;
  const codeGraceMs = options.codeGraceMs ?? DAY_MS;
  const zero = (): PurgeCounts => ({ flows: 0, codes: 0, payloads: 0, loginEvents: 0, auditRecords: 0 });
  const totals = zero();
  const state: Omit<HousekeepingStats, 'purged'> = { runs: 0, lastRunAt: null, lastDurationMs: null, lastRun: null, skippedBecauseLocked: 0 };
  let stopped = false;
  let inFlight: Promise<void> | undefined;

  const purgeOptions = (table: keyof PurgeCounts): PurgeOptions => ({
    batchSize,
    pauseMs,
    pause: options.pause,
    shouldStop: () => stopped,
    onBatch: options.onBatch ? (n) => options.onBatch?.(table, n) : undefined,
  });

  const purge = async (): Promise<PurgeCounts> => {
    const now = Date.now();
    const counts = zero();
    const flows = await services.flows.purgeExpired(new Date(now), purgeOptions('flows'));
    counts.flows = flows.flows;
    counts.codes = flows.codes + (await services.otpRepo.purgeSuperseded({ expiredBefore: new Date(now - codeGraceMs), purposes: [ACTIVATION_PURPOSE] }, purgeOptions('codes')));
    counts.codes += await services.passkeys.purgeExpiredChallenges(new Date(now), purgeOptions('codes'));
    counts.payloads = await services.payloads.purgeExpired(new Date(now), purgeOptions('payloads'));
    counts.loginEvents = await services.events.purgeOlderThan(new Date(now - config.loginEventRetentionDays * DAY_MS), purgeOptions('loginEvents'));
    counts.auditRecords = await services.audit.purgeOlderThan(new Date(now - config.auditRetentionDays * DAY_MS), purgeOptions('auditRecords'));
    return counts;
  };

  const runOnce = async (): Promise<void> => {
    const started = Date.now();
    try {
      const outcome = await services.exclusive.tryExclusive(HOUSEKEEPING_LOCK_KEY, purge);
      if (!outcome.acquired) {
        state.skippedBecauseLocked++;
        logger.debug('housekeeping skipped: another instance is running it');
        return;
      }
      const counts = outcome.value;
      for (const k of Object.keys(counts) as Array<keyof PurgeCounts>) totals[k] += counts[k];
      state.runs++;
      state.lastRunAt = new Date(started);
      state.lastDurationMs = Date.now() - started;
      state.lastRun = counts;
      logger.info({ ...counts, ms: state.lastDurationMs }, 'housekeeping purged expired records');
    } catch (err) {
      logger.warn({ err }, 'housekeeping failed');
    }
  };

  /** One run; a call while this instance is already running joins that run. */
  const run = (): Promise<void> => {
    inFlight ??= runOnce().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };

  const timer = setInterval(() => void run(), everyMs);
  timer.unref();
  const first = options.runAtStart === false ? Promise.resolve() : run();
  return {
    /**
     * Stops the timer. A run in progress is cut short: each table it has yet to reach gets at most
     * one batch, so a shutdown waits for a few statements, not for a backlog.
     */
    /** No further runs; resolves once a run in progress has finished its current batches. */
    stop: async (): Promise<void> => {
      stopped = true;
      clearInterval(timer);
      await inFlight;
    },
    run,
    first,
    stats: (): HousekeepingStats => ({ ...state, purged: { ...totals }, lastRun: state.lastRun && { ...state.lastRun } }),
  };
}
