import type { AppServices } from './app.js';
import type { Logger } from './logger.js';

/** Periodically purges expired login flows and OIDC records; every instance may run it (idempotent deletes). */
export function startHousekeeping(services: Pick<AppServices, 'flows' | 'payloads'>, logger: Logger, everyMs = 10 * 60_000) {
  const run = async () => {
    try {
      const flows = await services.flows.deleteExpired();
      const payloads = await services.payloads.deleteExpired();
      if (flows || payloads) logger.info({ flows, payloads }, 'purged expired records');
    } catch (err) {
      logger.warn({ err }, 'housekeeping failed');
    }
  };
  const timer = setInterval(run, everyMs);
  timer.unref();
  return { stop: () => clearInterval(timer), run };
}
