import type { DevMail, PrismaClient } from './generated/client.js';

export type { DevMail } from './generated/client.js';

export interface NewDevMail {
  /** Every recipient gets its own row, so the mailbox can be read per address like a real inbox. */
  to: readonly string[];
  subject: string;
  text: string;
  html: string | null;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Messages the development mailbox (/dev/mailbox) shows instead of real delivery (no SMTP_URL). */
export class DevMailRepository {
  constructor(private readonly prisma: PrismaClient) {}

  record(mail: NewDevMail): Promise<DevMail[]> {
    const { to, ...content } = mail;
    return this.prisma.devMail.createManyAndReturn({ data: to.map((address) => ({ to: address, ...content })) });
  }

  /** Newest first; `to` matches one recipient address exactly, ignoring case. */
  listLatest(limit: number, filter: { to?: string } = {}): Promise<DevMail[]> {
    return this.prisma.devMail.findMany({
      where: filter.to ? { to: { equals: filter.to, mode: 'insensitive' } } : {},
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: limit,
    });
  }

  get(id: string): Promise<DevMail | null> {
    // The column is a uuid: anything else would be a database error rather than "not found".
    if (!UUID.test(id)) return Promise.resolve(null);
    return this.prisma.devMail.findUnique({ where: { id } });
  }

  async deleteOlderThan(cutoff: Date): Promise<number> {
    const r = await this.prisma.devMail.deleteMany({ where: { createdAt: { lt: cutoff } } });
    return r.count;
  }
}
