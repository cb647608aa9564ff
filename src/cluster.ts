// The cluster primary (WEB_CONCURRENCY > 1): forks the HTTP workers, which share the port (node:cluster
// hands connections out in turn), replaces a worker that dies, and relays SIGTERM/SIGINT for a graceful
// shutdown. It loads none of the application itself, so it stays small.
//
// One-time start-up work (migrations, development keys and secrets written under DATA_DIR, the demo
// account) happens in the first worker, alone: the others are forked only once it listens, so they
// find everything in place. A first worker that fails to start stops the primary with its exit code.
import cluster, { type Worker } from 'node:cluster';
import type { AppConfig } from './config/index.js';
import type { Logger } from './logger.js';

/** Restart delay after an unexpected exit: 1 s, doubling with each further exit within a minute, at most 30 s. */
export function restartDelayMs(recentExits: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, recentExits - 1));
}

const CRASH_WINDOW_MS = 60_000;
// Past a worker's own limit (SHUTDOWN_TIMEOUT_SECONDS of draining, then 2 s to close; src/server.ts).
const shutdownLimitMs = (config: Pick<AppConfig, 'shutdownTimeoutSeconds'>) => config.shutdownTimeoutSeconds * 1000 + 3_000;

export function runPrimary(config: Pick<AppConfig, 'webConcurrency' | 'shutdownTimeoutSeconds'>, logger: Logger): void {
  let stopping = false;
  let started = false;
  const crashes: number[] = [];
  const pendingRestarts = new Set<NodeJS.Timeout>();
  const live = new Set<Worker>();

  const fork = (): Worker => {
    const worker = cluster.fork();
    live.add(worker);
    worker.once('listening', () => {
      logger.info({ worker: worker.process.pid }, 'worker listening');
      if (started) return;
      started = true;
      for (let i = 1; i < config.webConcurrency; i++) fork();
    });
    return worker;
  };

  cluster.on('exit', (worker, code, signal) => {
    live.delete(worker);
    if (stopping) {
      if (live.size === 0) process.exit(0);
      return;
    }
    if (!started) {
      logger.error({ worker: worker.process.pid, exitCode: code, signal }, 'the first worker failed to start');
      process.exit(code || 1);
    }
    const now = Date.now();
    crashes.push(now);
    while (crashes.length && crashes[0]! < now - CRASH_WINDOW_MS) crashes.shift();
    const delay = restartDelayMs(crashes.length);
    logger.error({ worker: worker.process.pid, exitCode: code, signal, restartInMs: delay }, 'worker died; forking a replacement');
    const timer = setTimeout(() => {
      pendingRestarts.delete(timer);
      if (!stopping) fork();
    }, delay);
    pendingRestarts.add(timer);
  });

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping workers');
    for (const timer of pendingRestarts) clearTimeout(timer);
    if (live.size === 0) process.exit(0);
    for (const w of live) w.process.kill('SIGTERM');
    setTimeout(() => {
      logger.warn('workers did not stop in time; killing them');
      for (const w of live) w.process.kill('SIGKILL');
      process.exit(1);
    }, shutdownLimitMs(config)).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  logger.info({ workers: config.webConcurrency }, 'starting workers');
  fork();
}
