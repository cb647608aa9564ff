import type { AccountEvent, PrismaClient } from './generated/client.js';
import type { Prisma } from './generated/client.js';

export type { AccountEvent } from './generated/client.js';

export interface NewAccountEvent {
  tenantId: string;
  accountId: string;
  type: string;
  actor: 'user' | 'admin' | 'api';
  sourceIp?: string | null;
  detail?: Record<string, string | number | boolean | null>;
}

export class AccountEventRepository {
  constructor(private readonly prisma: PrismaClient) {}

  record(e: NewAccountEvent): Promise<AccountEvent> {
    return this.prisma.accountEvent.create({
      data: { tenantId: e.tenantId, accountId: e.accountId, type: e.type, actor: e.actor, sourceIp: e.sourceIp ?? null, detail: (e.detail ?? undefined) as Prisma.InputJsonValue | undefined },
    });
  }

  listForAccount(accountId: string, opts: { skip?: number; take?: number } = {}): Promise<AccountEvent[]> {
    return this.prisma.accountEvent.findMany({ where: { accountId }, orderBy: { createdAt: 'desc' }, skip: opts.skip, take: opts.take });
  }
}
