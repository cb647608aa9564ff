// One HTTP process: waits for its database and Redis, opens the database (applying migrations), builds
// the application and listens; on SIGTERM/SIGINT it drains and stops. Run directly by src/main.ts, or as
// each worker of its cluster (WEB_CONCURRENCY > 1).
import { createServer, type Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AppConfig } from './config/index.js';
import { DEMO_USER_ID, seedDemoAccount } from './demo/seed.js';
import type { Logger } from './logger.js';
import { openDatabase } from './persistence/database.js';
import { startHousekeeping } from './housekeeping.js';
import { startMtlsListener } from './http/mtls-server.js';
import { StartupError, waitForRedis } from './startup-checks.js';

/** Time left, after draining, for closing the mail queue and the pools before the process exits anyway. */
const CLOSE_BUDGET_MS = 2_000;

export async function startServer(config: AppConfig, logger: Logger): Promise<void> {
  const db = await openDependencies(config, logger);
  logger.info({ database: db.kind }, 'database ready');
  // Loaded once the services answer, so a start that fails there prints nothing from the application's libraries.
  const { createApp } = await import('./app.js');
  const app = await createApp({ config, db, logger });
  if (config.seedDemo && (await seedDemoAccount(app.services.accounts, app.services.tenants))) logger.info({ userId: DEMO_USER_ID }, 'seeded demo account');
  const housekeeping = startHousekeeping(app.services, logger, config);
  app.services.metrics.readHousekeepingFrom(() => {
    const stats = housekeeping.stats();
    return { ...stats, purged: { ...stats.purged } };
  });

  const server = createServer(app.koa.callback());
  server.listen(config.port, config.host, () => {
    logger.info({ issuer: config.issuer }, 'provider listening');
    if (config.demoSite) logger.info(`demo site:   ${config.issuer}/demo/  (user ID: ${DEMO_USER_ID})`);
    if (config.devMailbox && !config.smtpUrl) logger.info(`dev mailbox: ${config.issuer}/dev/mailbox`);
  });

  // The mutual-TLS listener: same application, HTTPS asking for a client certificate (certificate logins).
  let mtls: Awaited<ReturnType<typeof startMtlsListener>> | undefined;
  if (config.certificates.mtls.port !== undefined) {
    mtls = await startMtlsListener({ config, caPem: await app.services.certificates.caPem(), handler: app.koa.callback(), port: config.certificates.mtls.port, host: config.host });
    logger.info({ port: mtls.port, url: config.certificates.mtls.url }, 'mutual-TLS listener ready');
  }

  // Stop accepting connections, let the requests in flight finish (for at most SHUTDOWN_TIMEOUT_SECONDS),
  // then close the mail queue (it gives the messages this process queued one more try) and the pools,
  // and exit; a close that hangs ends with exit code 1 two seconds after that.
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    const drainMs = config.shutdownTimeoutSeconds * 1000;
    setTimeout(() => {
      logger.error({ afterMs: drainMs + CLOSE_BUDGET_MS }, 'shutdown did not finish in time; exiting');
      process.exit(1);
    }, drainMs + CLOSE_BUDGET_MS).unref();
    // A purge in progress ends after its current batch; the pools are closed only after it.
    const housekeepingStopped = housekeeping.stop();
    // The listeners are closed when drain() returns: from this log line on, connections are refused.
    const draining = Promise.all([drain(server, drainMs), mtls ? drain(mtls.server, drainMs) : 0]);
    logger.info({ signal, drainMs }, 'shutting down');
    const forced = await draining;
    const cut = forced[0] + forced[1];
    if (cut) logger.warn({ connections: cut }, 'requests still running at the shutdown timeout were cut');
    try {
      await housekeepingStopped;
      await app.close();
      await db.close();
    } catch (error) {
      logger.error({ err: error instanceof Error ? error.message : String(error) }, 'error while closing');
      process.exit(1);
    }
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

/**
 * PostgreSQL and Redis, waited for with backoff (STARTUP_TIMEOUT_SECONDS) at the same time, so one
 * failed start names every service that is missing; then the database, opened and migrated.
 */
async function openDependencies(config: AppConfig, logger: Logger) {
  const timeoutMs = config.startupTimeoutSeconds * 1000;
  const [db, redis] = await Promise.allSettled([
    openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger, connectTimeoutMs: timeoutMs, statementTimeoutMs: config.databaseTimeoutMs }),
    config.redisUrl ? waitForRedis(config.redisUrl, timeoutMs, (reason, retryInMs) => logger.info({ reason, retryInMs }, 'Redis not reachable yet')) : undefined,
  ]);
  if (db.status === 'fulfilled' && redis.status === 'fulfilled') return db.value;
  if (db.status === 'fulfilled') await db.value.close().catch(() => undefined);
  const failures = [db, redis].flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  if (failures.length === 1) throw failures[0];
  // Both: one message, joined as main.ts prints several problems.
  if (failures.every((f) => f instanceof StartupError)) throw new StartupError(`start-up failed:\n  ${failures.map((f) => (f as Error).message).join('\n  ')}`);
  throw failures[0];
}

/**
 * Closes the listener, then closes each connection as soon as it is idle (keep-alive connections between
 * requests), until none is left or `timeoutMs` has passed, when the rest are cut. Resolves with the
 * number of connections that were cut.
 */
function drain(server: Server | HttpsServer, timeoutMs: number): Promise<number> {
  return new Promise((resolve) => {
    let cut = 0;
    const sweep = setInterval(() => server.closeIdleConnections(), 100);
    const force = setTimeout(() => {
      server.getConnections((_err, count) => {
        cut = count;
        server.closeAllConnections();
      });
    }, timeoutMs);
    server.close(() => {
      clearInterval(sweep);
      clearTimeout(force);
      resolve(cut);
    });
    server.closeIdleConnections();
  });
}
