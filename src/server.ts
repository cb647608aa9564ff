// One HTTP process: opens the database (applying migrations), builds the application and listens. Run
// directly by src/main.ts, or as each worker of its cluster (WEB_CONCURRENCY > 1).
import { createServer } from 'node:http';
import { createApp } from './app.js';
import type { AppConfig } from './config/index.js';
import { DEMO_USER_ID, seedDemoAccount } from './demo/seed.js';
import type { Logger } from './logger.js';
import { openDatabase } from './persistence/database.js';
import { startHousekeeping } from './housekeeping.js';
import { startMtlsListener } from './http/mtls-server.js';

export async function startServer(config: AppConfig, logger: Logger): Promise<void> {
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger });
  logger.info({ database: db.kind }, 'database ready');
  const app = await createApp({ config, db, logger });
  if (config.seedDemo && (await seedDemoAccount(app.services.accounts, app.services.tenants))) logger.info({ userId: DEMO_USER_ID }, 'seeded demo account');
  const housekeeping = startHousekeeping(app.services, logger, config);

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

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    housekeeping.stop();
    server.close();
    server.closeAllConnections();
    mtls?.server.close();
    mtls?.server.closeAllConnections();
    await app.close();
    await db.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}
