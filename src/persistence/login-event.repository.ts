import type { LoginEvent, PrismaClient } from './generated/client.js';
import { batchDelete, purgeInBatches, type PurgeOptions } from './purge.js';
import { sqlThroughPrisma } from './sql.js';

export type { LoginEvent } from './generated/client.js';

export interface NewLoginEvent {
  tenantId: string;
  accountId: string | null;
  submittedUserId: string | null;
  clientId: string | null;
  method: string | null;
  result: string;
  sourceIp: string | null;
  userAgent: string | null;
}

export class LoginEventRepository {
  constructor(private readonly prisma: PrismaClient) {}

  record(event: NewLoginEvent): Promise<LoginEvent> {
    return this.prisma.loginEvent.create({ data: { ...event, userAgent: event.userAgent?.slice(0, 512) ?? null } });
  }

  listForAccount(accountId: string, opts: { since?: Date; skip?: number; take?: number } = {}): Promise<LoginEvent[]> {
    return this.prisma.loginEvent.findMany({
      where: { accountId, ...(opts.since ? { createdAt: { gte: opts.since } } : {}) },
      // The id breaks ties between events of the same millisecond, so pages neither repeat nor skip rows.
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      skip: opts.skip,
      take: opts.take,
    });
  }

  /** How many events listForAccount would return without skip/take. */
  countForAccount(accountId: string, since?: Date): Promise<number> {
    return this.prisma.loginEvent.count({ where: { accountId, ...(since ? { createdAt: { gte: since } } : {}) } });
  }

  /** The account's successful logins, newest first. */
  listSuccesses(accountId: string, take: number): Promise<LoginEvent[]> {
    return this.prisma.loginEvent.findMany({ where: { accountId, result: 'success' }, orderBy: { createdAt: 'desc' }, take });
  }

  async deleteOlderThan(cutoff: Date): Promise<number> {
    const r = await this.prisma.loginEvent.deleteMany({ where: { createdAt: { lt: cutoff } } });
    return r.count;
  }

  /** deleteOlderThan in batches (housekeeping: LOGIN_EVENT_RETENTION_DAYS). */
  purgeOlderThan(cutoff: Date, opts: PurgeOptions): Promise<number> {
    return purgeInBatches(
      sqlThroughPrisma(this.prisma),
      batchDelete('login_events', 'SELECT ctid FROM login_events WHERE created_at < $2 LIMIT $1'),
      [cutoff],
      opts,
    );
  }
}
