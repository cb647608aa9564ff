import type { AuditRecord, Prisma, PrismaClient } from './generated/client.js';
import { batchDelete, purgeInBatches, type PurgeOptions } from './purge.js';
import { sqlThroughPrisma } from './sql.js';

export type { AuditRecord } from './generated/client.js';

export interface NewAuditRecord {
  tenantId: string;
  actorKind: string;
  actorId: string;
  action: string;
  targetUserId: string | null;
  sourceIp: string | null;
  requestId: string | null;
  /** Plain JSON data (the account's state). */
  before: object | null;
  after: object | null;
  /** `done` (the default) or `refused`, with the error code. */
  outcome?: AuditOutcome;
  errorCode?: string | null;
}

export type AuditOutcome = 'done' | 'refused';

export interface AuditFilter {
  tenantId: string;
  userId?: string;
  action?: string;
  actorKind?: string;
  actorId?: string;
  outcome?: AuditOutcome;
  since?: Date;
  until?: Date;
}

/** Where a page starts: after the record with this time and id (records are listed newest first). */
export interface AuditCursor {
  createdAt: Date;
  id: string;
}

/** The staff audit trail (`audit_records`): append-only, read newest first by keyset (time, id). */
export class AuditRepository {
  constructor(private readonly prisma: PrismaClient) {}

  async record(r: NewAuditRecord): Promise<AuditRecord> {
    return this.prisma.auditRecord.create({
      // The states are plain JSON objects built by the audit service.
      data: { ...r, before: (r.before ?? undefined) as Prisma.InputJsonValue | undefined, after: (r.after ?? undefined) as Prisma.InputJsonValue | undefined },
    });
  }

  /** Up to `take` records matching the filter, newest first, after the cursor. */
  list(filter: AuditFilter, opts: { after?: AuditCursor; take: number }): Promise<AuditRecord[]> {
    const where: Prisma.AuditRecordWhereInput = {
      tenantId: filter.tenantId,
      ...(filter.userId !== undefined ? { targetUserId: filter.userId } : {}),
      ...(filter.action !== undefined ? { action: filter.action } : {}),
      ...(filter.actorKind !== undefined ? { actorKind: filter.actorKind } : {}),
      ...(filter.actorId !== undefined ? { actorId: filter.actorId } : {}),
      ...(filter.outcome !== undefined ? { outcome: filter.outcome } : {}),
      ...(filter.since || filter.until ? { createdAt: { ...(filter.since ? { gte: filter.since } : {}), ...(filter.until ? { lt: filter.until } : {}) } } : {}),
    };
    const after = opts.after;
    return this.prisma.auditRecord.findMany({
      where: after ? { AND: [where, { OR: [{ createdAt: { lt: after.createdAt } }, { createdAt: after.createdAt, id: { lt: after.id } }] }] } : where,
      // The id breaks ties between records of the same millisecond, so pages neither repeat nor skip rows.
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: opts.take,
    });
  }

  /** Deletes the records created before the cutoff (AUDIT_RETENTION_DAYS), in batches. */
  purgeOlderThan(cutoff: Date, opts: PurgeOptions): Promise<number> {
    return purgeInBatches(sqlThroughPrisma(this.prisma), batchDelete('audit_records', 'SELECT ctid FROM audit_records WHERE created_at < $2 LIMIT $1'), [cutoff], opts);
  }
}
