// The outbox table and OTP repository of a test database, as the mail queues take them, and Redis clean-up.
import { Redis } from 'ioredis';
import type { MailStore } from '../../src/mail/mail.queue.js';
import type { Database } from '../../src/persistence/database.js';
import { MailOutboxRepository } from '../../src/persistence/mail-outbox.repository.js';
import { OneTimePasswordRepository } from '../../src/persistence/one-time-password.repository.js';

export const SEAL_KEYS = ['test-mail-seal-key-0123456789abcdef'];

export function mailStore(db: Database): MailStore {
  return { outbox: new MailOutboxRepository(db.prisma), otps: new OneTimePasswordRepository(db.prisma) };
}

/** Polls `check` until it is truthy (a positive marker), or fails after `timeoutMs`. */
export async function waitUntil<T>(check: () => T | Promise<T>, what: string, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Removes a test's BullMQ keys (its private prefix) from the shared Redis. */
export async function deleteKeys(redisUrl: string, pattern: string): Promise<void> {
  const redis = new Redis(redisUrl);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 500);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}
