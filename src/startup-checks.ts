// Waiting at start for the services the provider needs (PostgreSQL, Redis): they may start after it
// (a container orchestrator starts everything at once), so a refused connection is retried with
// exponential backoff for STARTUP_TIMEOUT_SECONDS before the provider gives up with one line.

/** A start-up failure whose message is the whole story: printed as one line, without a stack trace. */
export class StartupError extends Error {
  override name = 'StartupError';
}

/** Network errors worth another try: the service is not up (yet), or not reachable (yet). */
export const TRANSIENT_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', '57P03']);

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 5_000;

/** The error's code (ECONNREFUSED, or PostgreSQL's SQLSTATE), else its message. */
export function errorReason(error: unknown): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && code) return code;
  if (error instanceof AggregateError) return errorReason(error.errors[0]);
  return error instanceof Error ? error.message : String(error);
}

export function isTransient(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && TRANSIENT_CODES.has(code)) return true;
  if (error instanceof AggregateError) return error.errors.some(isTransient);
  // pg's connection timeout and a socket closed during the handshake have no code.
  return error instanceof Error && /timeout|timed out|Connection terminated|Connection is closed/i.test(error.message);
}

/** `host:port` of a connection URL: never its user name or password. */
export function describeUrl(url: string, defaultPort: number): string {
  try {
    const u = new URL(url);
    // libpq's ?host= (a socket folder) wins over the URL's host part.
    const host = u.searchParams.get('host') || u.hostname || 'localhost';
    return `${host}:${u.port || defaultPort}`;
  } catch {
    return '(an unparsable URL)';
  }
}

export interface WaitOptions {
  /** What is reached, for the message: "the database", "Redis". */
  what: string;
  /** Where, without credentials (describeUrl). */
  where: string;
  /** How long to keep trying, in milliseconds (0: one attempt). */
  timeoutMs: number;
  /** Told about each failed attempt that will be retried. */
  onRetry?: (reason: string, delayMs: number) => void;
}

/**
 * Calls `attempt` (given the time left, to bound its own connection timeout) until it succeeds, with
 * 0.5 s, 1 s, 2 s ... (at most 5 s) between attempts, for at most `timeoutMs`. A transient failure
 * after that, or any other failure at once, becomes a StartupError naming the service and the reason.
 */
export async function waitUntilReachable<T>(opts: WaitOptions, attempt: (timeLeftMs: number) => Promise<T>): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  let delay = FIRST_DELAY_MS;
  for (;;) {
    try {
      return await attempt(Math.max(deadline - Date.now(), 1_000));
    } catch (error) {
      const reason = errorReason(error);
      if (!isTransient(error)) {
        // A refusal by the service itself (a wrong password, a missing database): its own words.
        const message = error instanceof Error && error.message !== reason ? `${error.message} (${reason})` : reason;
        throw new StartupError(`cannot connect to ${opts.what} at ${opts.where}: ${message}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new StartupError(`cannot reach ${opts.what} at ${opts.where} after ${Math.round(opts.timeoutMs / 1000)} s: ${reason}`);
      const wait = Math.min(delay, left, MAX_DELAY_MS);
      opts.onRetry?.(reason, wait);
      await new Promise((resolve) => setTimeout(resolve, wait));
      delay *= 2;
    }
  }
}

/** Waits until Redis answers PING (see waitUntilReachable); REDIS_URL's password is never printed. */
export async function waitForRedis(url: string, timeoutMs: number, onRetry?: WaitOptions['onRetry']): Promise<void> {
  const { Redis } = await import('ioredis');
  await waitUntilReachable({ what: 'Redis', where: describeUrl(url, 6379), timeoutMs, onRetry }, async (timeLeftMs) => {
    const client = new Redis(url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: Math.min(timeLeftMs, 5_000),
      retryStrategy: () => null,
    });
    let lastError: unknown;
    // ioredis reports the socket's error here; connect() itself only says "Connection is closed".
    client.on('error', (error: unknown) => (lastError ??= error));
    try {
      await client.connect();
      await client.ping();
    } catch (error) {
      throw lastError ?? error;
    } finally {
      client.disconnect();
    }
  });
}
