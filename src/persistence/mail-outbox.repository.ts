import { randomUUID } from 'node:crypto';
import type { MailMessage, PrismaClient } from './generated/client.js';
import { sqlThroughPrisma, type Sql } from './sql.js';

export type { MailMessage } from './generated/client.js';

export interface NewMailMessage {
  template: string;
  tenantId: string | null;
  otpId: string | null;
  recipients: number;
  maskedTo: string[];
  deliverBy: Date;
}

/** A row taken for one delivery attempt; `attempts` already counts it. */
export interface ClaimedMailMessage {
  id: string;
  template: string;
  tenantId: string | null;
  otpId: string | null;
  recipients: number;
  maskedTo: string;
  payload: string | null;
  attempts: number;
  deliverBy: Date;
}

/** A message to be added already taken by one process for its first attempt (see addClaimed). */
export interface ClaimedInsert {
  id: string;
  message: NewMailMessage & { payload: string };
  token: string;
  lockedUntil: Date;
}

/** The row of `message`, taken by the holder of `lease.token` from now on. */
export function claimedInsert(message: NewMailMessage & { payload: string }, lease: { token: string; leaseMs: number }): ClaimedInsert {
  return { id: randomUUID(), message, token: lease.token, lockedUntil: new Date(Date.now() + lease.leaseMs) };
}

/**
 * The INSERT of a taken message, its values appended to `params`: run by addClaimed, or as a part of
 * another statement (a login code's, which stores the code and its mail together).
 */
export function claimedInsertSql(params: unknown[], row: ClaimedInsert): string {
  const m = row.message;
  const n = params.push(row.id, m.template, m.tenantId, m.otpId, m.recipients, m.maskedTo.join(','), m.deliverBy, m.payload, row.token, row.lockedUntil) - 10;
  const p = (i: number) => `$${n + i}`;
  return `INSERT INTO mail_outbox (id, template, tenant_id, otp_id, recipients, masked_to, deliver_by, payload, lease_token, locked_until, attempts)
       VALUES (${p(1)}::uuid, ${p(2)}, ${p(3)}, ${p(4)}::uuid, ${p(5)}, ${p(6)}, ${p(7)}::timestamptz, ${p(8)}, ${p(9)}, ${p(10)}::timestamptz, 1)`;
}

/** The taken message as its delivery sees it, once stored. */
export function claimedMessage(row: ClaimedInsert): ClaimedMailMessage {
  const m = row.message;
  return { id: row.id, template: m.template, tenantId: m.tenantId, otpId: m.otpId, recipients: m.recipients, maskedTo: m.maskedTo.join(','), payload: m.payload, attempts: 1, deliverBy: m.deliverBy };
}

/**
 * The mail outbox (like Ory Kratos' courier messages): one row per message with a status. Instances
 * take due rows with a short lease (FOR UPDATE SKIP LOCKED), so a row is delivered by one instance at
 * a time and an instance that dies mid-delivery leaves it to another once the lease runs out.
 */
export class MailOutboxRepository {
  private readonly sql: Sql;

  constructor(
    private readonly prisma: PrismaClient,
    sql?: Sql,
  ) {
    this.sql = sql ?? sqlThroughPrisma(prisma);
  }

  async add(message: NewMailMessage & { payload: string }): Promise<string> {
    const row = await this.prisma.mailMessage.create({ data: { ...columns(message), payload: message.payload }, select: { id: true } });
    return row.id;
  }

  /**
   * Adds a message already taken by the caller for its first attempt (as claimDue would, without a
   * second statement): the process that queued it delivers it at once, and another instance takes it
   * over if that process dies before the lease runs out.
   */
  async addClaimed(message: NewMailMessage & { payload: string }, lease: { token: string; leaseMs: number }): Promise<ClaimedMailMessage> {
    // Raw SQL, as markSent: one of each per mail.
    const row = claimedInsert(message, lease);
    const params: unknown[] = [];
    await this.sql.query(claimedInsertSql(params, row), params);
    return claimedMessage(row);
  }

  /**
   * Takes up to `limit` due pending rows (or only those of `ids`) for `leaseMs`, counting the attempt.
   * One statement, so two instances never take the same row.
   */
  async claimDue(opts: { limit: number; leaseMs: number; token: string; now?: Date; ids?: readonly string[] }): Promise<ClaimedMailMessage[]> {
    const now = opts.now ?? new Date();
    if (opts.ids && opts.ids.length === 0) return [];
    const rows = await this.prisma.$queryRawUnsafe<Array<{ id: string; template: string; tenant_id: string | null; otp_id: string | null; recipients: number; masked_to: string; payload: string | null; attempts: number; deliver_by: Date }>>(
      `UPDATE mail_outbox SET locked_until = $1::timestamptz, lease_token = $2, attempts = attempts + 1
        WHERE id IN (
          SELECT id FROM mail_outbox
           WHERE status = 'pending' AND next_attempt_at <= $3::timestamptz AND (locked_until IS NULL OR locked_until <= $3::timestamptz)
             ${opts.ids ? `AND id = ANY(string_to_array($5, ',')::uuid[])` : ''}
           ORDER BY next_attempt_at LIMIT $4
           FOR UPDATE SKIP LOCKED)
        RETURNING id::text, template, tenant_id, otp_id::text, recipients, masked_to, payload, attempts, deliver_by`,
      new Date(now.getTime() + opts.leaseMs).toISOString(),
      opts.token,
      now.toISOString(),
      opts.limit,
      ...(opts.ids ? [opts.ids.join(',')] : []),
    );
    return rows.map((r) => ({
      id: r.id,
      template: r.template,
      tenantId: r.tenant_id,
      otpId: r.otp_id,
      recipients: Number(r.recipients),
      maskedTo: r.masked_to,
      payload: r.payload,
      attempts: Number(r.attempts),
      deliverBy: new Date(r.deliver_by),
    }));
  }

  /** Keeps the lease of rows still being delivered (a slow SMTP server must not hand them to another instance). */
  async renewLease(ids: readonly string[], token: string, leaseMs: number): Promise<void> {
    if (!ids.length) return;
    await this.prisma.mailMessage.updateMany({ where: { id: { in: [...ids] }, leaseToken: token, status: 'pending' }, data: { lockedUntil: new Date(Date.now() + leaseMs) } });
  }

  async markSent(id: string, token: string): Promise<void> {
    await this.sql.query(
      "UPDATE mail_outbox SET status = 'sent', sent_at = now(), payload = NULL, locked_until = NULL, last_error = NULL WHERE id = $1::uuid AND lease_token = $2",
      [id, token],
    );
  }

  /** A staged message handed to BullMQ by the holder of its lease: its row (and sealed payload) goes. */
  async release(id: string, token: string): Promise<void> {
    await this.sql.query('DELETE FROM mail_outbox WHERE id = $1::uuid AND lease_token = $2', [id, token]);
  }

  async markRetry(id: string, token: string, nextAttemptAt: Date, lastError: string): Promise<void> {
    await this.prisma.mailMessage.updateMany({ where: { id, leaseToken: token }, data: { nextAttemptAt, lockedUntil: null, lastError: lastError.slice(0, 500) } });
  }

  /** Given up: the payload goes, the row stays for operators. */
  async markFailed(id: string, token: string, lastError: string): Promise<void> {
    await this.prisma.mailMessage.updateMany({ where: { id, leaseToken: token }, data: { status: 'failed', failedAt: new Date(), payload: null, lockedUntil: null, lastError: lastError.slice(0, 500) } });
  }

  /** A message given up elsewhere (BullMQ), recorded without payload so operators see it beside the outbox's. */
  async recordFailed(message: NewMailMessage & { attempts: number; lastError: string; createdAt: Date }): Promise<void> {
    const now = new Date();
    await this.prisma.mailMessage.create({
      data: { ...columns(message), attempts: message.attempts, createdAt: message.createdAt, lastError: message.lastError.slice(0, 500), status: 'failed', failedAt: now, nextAttemptAt: now, payload: null },
    });
  }

  /** Pending and given-up messages, newest first. */
  listUndelivered(filter: { tenantId?: string; limit?: number } = {}): Promise<MailMessage[]> {
    return this.prisma.mailMessage.findMany({
      where: { status: { in: ['pending', 'failed'] }, ...(filter.tenantId ? { tenantId: filter.tenantId } : {}) },
      orderBy: { createdAt: 'desc' },
      take: filter.limit ?? 100,
    });
  }

  /** Purges sent messages older than `sentBefore` and given-up ones older than `failedBefore`. */
  async deleteFinished(sentBefore: Date, failedBefore: Date): Promise<number> {
    const r = await this.prisma.mailMessage.deleteMany({
      where: { OR: [{ status: 'sent', createdAt: { lt: sentBefore } }, { status: 'failed', createdAt: { lt: failedBefore } }] },
    });
    return r.count;
  }
}

function columns(m: NewMailMessage) {
  return { template: m.template, tenantId: m.tenantId, otpId: m.otpId, recipients: m.recipients, maskedTo: m.maskedTo.join(','), deliverBy: m.deliverBy };
}
