// `npm start` / `node dist/main.js`: the HTTP provider. With WEB_CONCURRENCY > 1 this process becomes
// a cluster primary (src/cluster.ts) forking that many HTTP workers on the same port; the modules of
// the application are loaded only where they serve requests.
import cluster from 'node:cluster';
import { ConfigError, loadConfig } from './config/index.js';
import { createLogger } from './logger.js';
import { DataDirLockedError } from './persistence/data-dir-lock.js';
import { StartupError } from './startup-checks.js';

/** A multi-line configuration message as one line: its heading, then its entries separated by "; ". */
function oneLine(message: string): string {
  const [head = '', ...rest] = message.split('\n').map((l) => l.trim()).filter(Boolean);
  return rest.length ? `${head} ${rest.join('; ')}` : head;
}

async function main() {
  const config = loadConfig();
  if (cluster.isPrimary && config.webConcurrency > 1) {
    if (!config.databaseUrl) {
      console.error(`WEB_CONCURRENCY=${config.webConcurrency} needs DATABASE_URL (PostgreSQL): the embedded database allows one process.`);
      process.exit(1);
    }
    const { runPrimary } = await import('./cluster.js');
    runPrimary(config, createLogger(config.logLevel, 'idp-primary'));
    return;
  }
  const { startServer } = await import('./server.js');
  await startServer(config, createLogger(config.logLevel));
}

main().catch((e: unknown) => {
  // What an operator must fix (a setting, an unreachable service): one line, no stack trace.
  if (e instanceof ConfigError || e instanceof StartupError) {
    console.error(oneLine(e.message));
    process.exit(1);
  }
  if (e instanceof DataDirLockedError) {
    console.error(`${e.message}: is the provider already running? The embedded database allows one process; set DATABASE_URL to run several.`);
    process.exit(1);
  }
  console.error(e);
  process.exit(1);
});
