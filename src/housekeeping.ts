import type { AppServices } from './app.js';
import type { AppConfig } from './config/index.js';
import type { Logger } from './logger.js';

const DAY_MS = 24 * 3600_000;

/**
 * Periodically purges expired login flows and OIDC records, and login events past their retention
 * (LOGIN_EVENT_RETENTION_DAYS); every instance may run it (idempotent deletes). Runs once at start too,
 * so a rarely running instance still purges.
 */
export function startHousekeeping(
  services: Pick<AppServices, 'flows' | 'payloads' | 'events'>,
  logger: Logger,
  config: Pick<AppConfig, 'loginEventRetentionDays'>,
  everyMs = 10 * 60_000,
) {
  const run = async () => {
    try {
      const flows = await services.flows.deleteExpired();
      const payloads = await services.payloads.deleteExpired();
      const loginEvents = await services.events.deleteOlderThan(new Date(Date.now() - config.loginEventRetentionDays * DAY_MS));
      if (flows || payloads || loginEvents) logger.info({ flows, payloads, loginEvents }, 'purged expired records');
    } catch (err) {
      logger.warn({ err }, 'housekeeping failed');
    }
  };
  const timer = setInterval(run, everyMs);
  timer.unref();
  const first = run();
  return { stop: () => clearInterval(timer), run, first };
}
