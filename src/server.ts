import { createServer } from 'node:http';
import { createApp } from './app.js';
import { ConfigError, loadConfig } from './config/index.js';
import { DEMO_USER_ID, seedDemoAccount } from './demo/seed.js';
import { createLogger } from './logger.js';
import { DataDirLockedError } from './persistence/data-dir-lock.js';
import { openDatabase } from './persistence/database.js';
import { startHousekeeping } from './housekeeping.js';
import { startMtlsListener } from './http/mtls-server.js';

async function main() {
  let config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      process.exit(1);
    }
    throw e;
  }
  const logger = createLogger(config.logLevel);
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

main().catch((e: unknown) => {
  if (e instanceof DataDirLockedError) {
    console.error(`${e.message}: is the provider already running? The embedded database allows one process; set DATABASE_URL to run several.`);
    process.exit(1);
  }
  console.error(e);
  process.exit(1);
});
