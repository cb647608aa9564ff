import { randomUUID } from 'node:crypto';
import type { OneTimePassword, PrismaClient } from './generated/client.js';
import { batchDelete, purgeInBatches, type PurgeOptions } from './purge.js';
import { claimedInsertSql, type ClaimedInsert } from './mail-outbox.repository.js';
import { asDate, sqlThroughPrisma, type Sql } from './sql.js';

export type { OneTimePassword } from './generated/client.js';

/**
 * Newest first. Two codes of one flow stored in the same millisecond (timestamps keep ms) are told
 * apart by what the later one did to the earlier: it retired it, so the earlier was consumed first.
 */
export const NEWEST_CODE_FIRST = 'o.created_at DESC, o.consumed_at DESC NULLS FIRST';

/** The columns of `one_time_passwords o` for otpFromRow. */
export const OTP_COLUMNS = 'o.id, o.flow_id, o.account_id, o.purpose, o.code_hmac, o.expires_at, o.consumed_at, o.delivery_failed_at, o.created_at';

export interface OtpRow {
  id: string;
  flow_id: string | null;
  account_id: string | null;
  purpose: string;
  code_hmac: string;
  expires_at: Date;
  consumed_at: Date | null;
  delivery_failed_at: Date | null;
  created_at: Date;
}

export function otpFromRow(r: OtpRow): OneTimePassword {
  return {
    id: r.id,
    flowId: r.flow_id,
    accountId: r.account_id,
    purpose: r.purpose,
    codeHmac: r.code_hmac,
    expiresAt: asDate(r.expires_at),
    consumedAt: asDate(r.consumed_at),
    deliveryFailedAt: asDate(r.delivery_failed_at),
    createdAt: asDate(r.created_at),
  };
}

/** One-time passwords, stored as HMACs only. */
export class OneTimePasswordRepository {
  private readonly sql: Sql;

  constructor(
    private readonly prisma: PrismaClient,
    sql?: Sql,
  ) {
    this.sql = sql ?? sqlThroughPrisma(prisma);
  }

  /**
   * Stores a new code for a flow and retires the flow's earlier unused codes (a resend replaces them),
   * in one statement: the UPDATE and the INSERT of the CTE share a snapshot, as a transaction would.
   */
  async issue(input: { id?: string; flowId: string | null; accountId: string | null; purpose: string; codeHmac: string; expiresAt: Date; mail?: ClaimedInsert }): Promise<OneTimePassword> {
    const { mail, id = randomUUID(), ...data } = input;
    if (!data.flowId) {
      if (mail) throw new Error('a code stored with its mail needs a flow');
      return this.prisma.oneTimePassword.create({ data: { id, ...data } });
    }
    const params: unknown[] = [id, data.flowId, data.accountId, data.purpose, data.codeHmac, data.expiresAt];
    // The code's mail, when given, is stored by the same statement (see MailQueue.stage).
    const withMail = mail ? `, mail AS (${claimedInsertSql(params, mail)})` : '';
    const rows = await this.sql.query<OtpRow>(
      `WITH retired AS (
         UPDATE one_time_passwords SET consumed_at = now() WHERE flow_id = $2::uuid AND purpose = $4 AND consumed_at IS NULL
       )${withMail}
       INSERT INTO one_time_passwords AS o (id, flow_id, account_id, purpose, code_hmac, expires_at, created_at)
       VALUES ($1::uuid, $2::uuid, $3::uuid, $4, $5, $6, now())
       RETURNING ${OTP_COLUMNS}`,
      params,
    );
    return otpFromRow(rows[0]!);
  }

  /** Stores a new account-level code (activation) and retires the account's earlier unused ones of that purpose. */
  async issueForAccount(input: { accountId: string; purpose: string; codeHmac: string; expiresAt: Date }): Promise<OneTimePassword> {
    return this.prisma.$transaction(async (tx) => {
      await tx.oneTimePassword.updateMany({ where: { accountId: input.accountId, purpose: input.purpose, flowId: null, consumedAt: null }, data: { consumedAt: new Date() } });
      return tx.oneTimePassword.create({ data: { ...input, flowId: null } });
    });
  }

  latestForAccount(accountId: string, purpose: string): Promise<OneTimePassword | null> {
    return this.prisma.oneTimePassword.findFirst({ where: { accountId, purpose, flowId: null }, orderBy: { createdAt: 'desc' } });
  }

  findById(id: string): Promise<OneTimePassword | null> {
    return this.prisma.oneTimePassword.findUnique({ where: { id } });
  }

  /** The newest code of a flow, consumed or not (the caller tells wrong, expired and used apart). */
  async latestForFlow(flowId: string, purpose: string): Promise<OneTimePassword | null> {
    const rows = await this.sql.query<OtpRow>(
      `SELECT ${OTP_COLUMNS} FROM one_time_passwords o WHERE o.flow_id = $1::uuid AND o.purpose = $2 ORDER BY ${NEWEST_CODE_FIRST} LIMIT 1`,
      [flowId, purpose],
    );
    return rows[0] ? otpFromRow(rows[0]) : null;
  }

  /** Finds a code of the flow by its HMAC (to tell an expired or used code from a wrong one). */
  findByHmac(flowId: string, purpose: string, codeHmac: string): Promise<OneTimePassword | null> {
    return this.prisma.oneTimePassword.findFirst({ where: { flowId, purpose, codeHmac }, orderBy: { createdAt: 'desc' } });
  }

  /** The mail carrying this code was given up; the flow's next step says so. */
  async markDeliveryFailed(id: string): Promise<void> {
    await this.prisma.oneTimePassword.updateMany({ where: { id, deliveryFailedAt: null }, data: { deliveryFailedAt: new Date() } });
  }

  /** Marks a code used, only if it is unused and unexpired; false when another request got there first. */
  async consume(id: string, now = new Date()): Promise<boolean> {
    const rows = await this.sql.query<{ id: string }>(
      'UPDATE one_time_passwords SET consumed_at = $2 WHERE id = $1::uuid AND consumed_at IS NULL AND expires_at > $2 RETURNING id',
      [id, now],
    );
    return rows.length === 1;
  }

  /**
   * Deletes, in batches (housekeeping), account-level codes of `purposes` (activation) that expired
   * before `expiredBefore` and have a newer code of the same account and purpose: only the newest one
   * is ever checked. Other account-level codes stay: the newest activation code is what answers
   * "expired", and a device proof counts its failures from its first code; they go when a new
   * procedure starts, the device goes or the account is deleted. Codes of flows go with their flows
   * (LoginFlowRepository.purgeExpired).
   */
  purgeSuperseded(input: { expiredBefore: Date; purposes: readonly string[] }, opts: PurgeOptions): Promise<number> {
    if (input.purposes.length === 0) return Promise.resolve(0);
    return purgeInBatches(
      this.sql,
      batchDelete(
        'one_time_passwords',
        `SELECT o.ctid FROM one_time_passwords o
          WHERE o.flow_id IS NULL AND o.purpose = ANY($3::text[]) AND o.expires_at < $2
            AND EXISTS (SELECT 1 FROM one_time_passwords n
                         WHERE n.account_id = o.account_id AND n.purpose = o.purpose AND n.flow_id IS NULL AND n.created_at > o.created_at)
          LIMIT $1`,
      ),
      [input.expiredBefore, [...input.purposes]],
      opts,
    );
  }
}
