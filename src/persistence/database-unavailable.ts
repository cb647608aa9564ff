// Which errors mean "the database cannot answer now" (down, unreachable, restarting, full, or slower
// than DATABASE_TIMEOUT_SECONDS) rather than "this request is wrong": those are answered with 503
// and Retry-After (the error handler, and oidc-provider's temporarily_unavailable), not a 500.
import { TRANSIENT_CODES } from '../startup-checks.js';

/** Retry-After (seconds) of a 503 answered for a database outage. */
export const DATABASE_RETRY_AFTER_SECONDS = 30;

/** SQLSTATEs of a server that is shutting down, starting, or out of connections (class 08, 57P01–03, 53300). */
const SERVER_CODES = /^(08[0-9A-Z]{3}|57P0[123]|53300)$/;

/**
 * Prisma's codes for the same: P1001 can't reach the server, P1002 and P1008 timed out, P1017 the
 * server closed the connection, P2024 timed out waiting for a pooled connection.
 */
const PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024']);

/**
 * pg's own errors, which carry no code: a statement past `query_timeout`, no connection within
 * `connectionTimeoutMillis` (new, or free in the pool), a connection lost mid-statement.
 */
const DRIVER_MESSAGES = /^(Query read timeout|timeout exceeded when trying to connect|Connection terminated|Client has encountered a connection error and is not queryable)/;

export function isDatabaseUnavailable(err: unknown): boolean {
  // Prisma and other wrappers keep the driver's error as `cause`; a few levels are enough.
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (TRANSIENT_CODES.has(code) || SERVER_CODES.test(code) || PRISMA_CODES.has(code))) return true;
    // The server ended the session (FATAL): e.g. the database not accepting connections (55000).
    const severity = (e as { severity?: unknown }).severity;
    if (severity === 'FATAL' || severity === 'PANIC') return true;
    if (e instanceof Error && DRIVER_MESSAGES.test(e.message)) return true;
  }
  return false;
}
