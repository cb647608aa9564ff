import type { Account, Device, Prisma, PrismaClient } from './generated/client.js';
import { asDate, sqlThroughPrisma, type Sql } from './sql.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export type AccountWithDevices = Account & { devices: Device[] };
/** A staff role of the tenant's support desk (the support console); null on ordinary accounts. */
export type AccountRole = NonNullable<Account['role']>;
export const ACCOUNT_ROLES: readonly AccountRole[] = ['support', 'admin'];
export type { Account, Device } from './generated/client.js';

export interface NewAccount {
  tenantId: string;
  userId: string;
  loginMethod?: string;
  status?: 'pending_activation' | 'active';
  devices: Array<{ email: string; kind?: 'pc' | 'mobile' | 'smartphone'; verified?: boolean }>;
}

/**
 * Whether the lock of `accounts a` is in force: taken, and (if temporary) not lifted yet. The one
 * rule in SQL; `isLocked` (src/lockout/account-lock.ts) is the same in TypeScript, and
 * `lockInForceWhere` below the same as a Prisma filter.
 */
export const LOCK_IN_FORCE = `(a.locked_at IS NOT NULL AND (a.locked_until IS NULL OR a.locked_until > now()))`;

/** LOCK_IN_FORCE as a Prisma filter (`true`: locked accounts; `false`: the others). */
export function lockInForceWhere(locked: boolean, now = new Date()): Prisma.AccountWhereInput {
  return locked
    ? { lockedAt: { not: null }, OR: [{ lockedUntil: null }, { lockedUntil: { gt: now } }] }
    : { OR: [{ lockedAt: null }, { lockedUntil: { lte: now } }] };
}

/**
 * The columns of `accounts a` with its devices as one JSON array (ordered by number), for
 * accountFromRow. Other statements (the login context) select the same to load an account on the side.
 */
export const ACCOUNT_COLUMNS = `a.id, a.tenant_id, a.user_id, a.status::text AS status, a.login_method, a.role::text AS role, a.failed_attempts, a.locked_at, a.locked_until,
  a.password_hash, a.secret_question_id, a.secret_answer_hash, a.locale, a.last_login_at, a.last_login_ip, a.activated_at,
  a.created_at, a.updated_at,
  COALESCE((SELECT json_agg(json_build_object('id', d.id, 'number', d.number, 'email', d.email, 'kind', d.kind::text,
      'verified_at', d.verified_at, 'pending_email', d.pending_email, 'created_at', d.created_at) ORDER BY d.number)
    FROM devices d WHERE d.account_id = a.id), '[]'::json) AS devices`;

export interface AccountRow {
  id: string;
  tenant_id: string;
  user_id: string;
  status: string;
  login_method: string;
  role: string | null;
  failed_attempts: number;
  locked_at: Date | null;
  locked_until: Date | null;
  password_hash: string | null;
  secret_question_id: string | null;
  secret_answer_hash: string | null;
  locale: string | null;
  last_login_at: Date | null;
  last_login_ip: string | null;
  activated_at: Date | null;
  created_at: Date;
  updated_at: Date;
  devices: Array<{ id: string; number: number; email: string; kind: string; verified_at: string | null; pending_email: string | null; created_at: string }> | string;
}

/** An AccountRow as the same object Prisma returns for an account with its devices. */
export function accountFromRow(r: AccountRow): AccountWithDevices {
  const devices = typeof r.devices === 'string' ? (JSON.parse(r.devices) as Exclude<AccountRow['devices'], string>) : r.devices;
  return {
    id: r.id,
    tenantId: r.tenant_id,
    userId: r.user_id,
    status: r.status as Account['status'],
    loginMethod: r.login_method,
    role: r.role as Account['role'],
    failedAttempts: r.failed_attempts,
    lockedAt: asDate(r.locked_at),
    lockedUntil: asDate(r.locked_until),
    passwordHash: r.password_hash,
    secretQuestionId: r.secret_question_id,
    secretAnswerHash: r.secret_answer_hash,
    locale: r.locale,
    lastLoginAt: asDate(r.last_login_at),
    lastLoginIp: r.last_login_ip,
    activatedAt: asDate(r.activated_at),
    createdAt: asDate(r.created_at),
    updatedAt: asDate(r.updated_at),
    devices: devices.map((d) => ({
      id: d.id,
      accountId: r.id,
      number: d.number,
      email: d.email,
      kind: d.kind as Device['kind'],
      verifiedAt: asDate(d.verified_at),
      pendingEmail: d.pending_email,
      createdAt: asDate(d.created_at),
    })),
  };
}

/** Accounts and their devices. Failure counting is one atomic statement so parallel attempts can't overshoot. */
export class AccountRepository {
  private readonly sql: Sql;

  constructor(
    private readonly prisma: PrismaClient,
    sql?: Sql,
  ) {
    this.sql = sql ?? sqlThroughPrisma(prisma);
  }

  // The two look-ups of every login step: the account and its devices in one statement.
  async findByUserId(tenantId: string, userId: string): Promise<AccountWithDevices | null> {
    const rows = await this.sql.query<AccountRow>(`SELECT ${ACCOUNT_COLUMNS} FROM accounts a WHERE a.tenant_id = $1 AND a.user_id = $2`, [tenantId, userId]);
    return rows[0] ? accountFromRow(rows[0]) : null;
  }

  async findById(id: string): Promise<AccountWithDevices | null> {
    // Subjects arrive from tokens and cookies; a malformed one is simply nobody.
    if (!UUID.test(id)) return null;
    const rows = await this.sql.query<AccountRow>(`SELECT ${ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $1::uuid`, [id]);
    return rows[0] ? accountFromRow(rows[0]) : null;
  }

  /** Only the tenant of an account (a cheap look-up for checks on every authorization request). */
  async tenantOf(id: string): Promise<string | null> {
    if (!UUID.test(id)) return null;
    const row = await this.prisma.account.findUnique({ where: { id }, select: { tenantId: true } });
    return row?.tenantId ?? null;
  }

  create(input: NewAccount): Promise<AccountWithDevices> {
    const now = new Date();
    return this.prisma.account.create({
      data: {
        tenantId: input.tenantId,
        userId: input.userId,
        loginMethod: input.loginMethod ?? 'otp',
        status: input.status ?? 'active',
        activatedAt: (input.status ?? 'active') === 'active' ? new Date() : null,
        devices: {
          create: input.devices.map((d, i) => ({ number: i + 1, email: d.email, kind: d.kind ?? 'pc', verifiedAt: d.verified === false ? null : now })),
        },
      },
      include: { devices: { orderBy: { number: 'asc' } } },
    });
  }

  /**
   * Counts one failure and locks the account when the count reaches `threshold`, in one statement:
   * for `durationMinutes` (lifting at `lockedUntil`), or for good when null. A lock that has lifted
   * by itself counts as none, and the failure after it counts from 1 again. Returns null when the
   * account's lock is in force (the counter then stays where it stopped). Parallel failures queue on
   * the row and each sees the one before it, so the count is exact.
   */
  async registerFailure(
    accountId: string,
    threshold: number,
    durationMinutes: number | null,
  ): Promise<{ failedAttempts: number; locked: boolean; lockedUntil: Date | null } | null> {
    // The count after this failure: from 1 again after a lock that lifted by itself.
    const count = `CASE WHEN a.locked_at IS NULL THEN a.failed_attempts + 1 ELSE 1 END`;
    const rows = await this.sql.query<{ failed_attempts: number; locked_at: Date | null; locked_until: Date | null }>(
      `UPDATE accounts a
          SET failed_attempts = ${count},
              locked_at = CASE WHEN ${count} >= $2 THEN now() ELSE NULL END,
              locked_until = CASE WHEN ${count} >= $2 THEN now() + make_interval(mins => $3::int) ELSE NULL END,
              updated_at = now()
        WHERE a.id = $1::uuid AND NOT ${LOCK_IN_FORCE}
    RETURNING a.failed_attempts, a.locked_at, a.locked_until`,
      [accountId, threshold, durationMinutes],
    );
    const row = rows[0];
    return row ? { failedAttempts: row.failed_attempts, locked: row.locked_at !== null, lockedUntil: asDate(row.locked_until) } : null;
  }

  /**
   * Accounts of a tenant, newest first, optionally by status (`locked` means locked now, whatever the
   * status), by the start of the user ID (callers pass user-ID characters only: no LIKE wildcards)
   * and by a device's e-mail address (whole, any case).
   */
  async list(
    tenantId: string,
    opts: { status?: 'pending_activation' | 'active' | 'locked'; userIdPrefix?: string; email?: string; skip: number; take: number },
  ): Promise<{ items: AccountWithDevices[]; total: number }> {
    const byStatus: Prisma.AccountWhereInput =
      opts.status === 'locked' ? lockInForceWhere(true) : opts.status ? { status: opts.status, ...lockInForceWhere(false) } : {};
    const where: Prisma.AccountWhereInput = {
      AND: [
        { tenantId },
        byStatus,
        ...(opts.userIdPrefix ? [{ userId: { startsWith: opts.userIdPrefix } }] : []),
        ...(opts.email ? [{ devices: { some: { email: { equals: opts.email, mode: 'insensitive' as const } } } }] : []),
      ],
    };
    const [items, total] = await this.prisma.$transaction([
      this.prisma.account.findMany({ where, orderBy: [{ createdAt: 'desc' }, { userId: 'asc' }], skip: opts.skip, take: opts.take, include: { devices: { orderBy: { number: 'asc' } } } }),
      this.prisma.account.count({ where }),
    ]);
    return { items, total };
  }

  /** Replaces the login method, the staff role and/or the devices (renumbered from 1) of an account. */
  async update(id: string, data: { loginMethod?: string; role?: AccountRole | null; devices?: Array<{ email: string; kind: 'pc' | 'mobile' | 'smartphone' }> }): Promise<AccountWithDevices> {
    return this.prisma.$transaction(async (tx) => {
      if (data.devices) {
        await tx.device.deleteMany({ where: { accountId: id } });
        const now = new Date();
        await tx.device.createMany({ data: data.devices.map((d, i) => ({ accountId: id, number: i + 1, email: d.email, kind: d.kind, verifiedAt: now })) });
      }
      return tx.account.update({
        where: { id },
        data: { ...(data.loginMethod ? { loginMethod: data.loginMethod } : {}), ...(data.role !== undefined ? { role: data.role } : {}) },
        include: { devices: { orderBy: { number: 'asc' } } },
      });
    });
  }

  /** Marks the account as waiting for (a new) first-time authentication. */
  async markPendingActivation(id: string): Promise<void> {
    await this.prisma.account.update({ where: { id }, data: { status: 'pending_activation' } });
  }

  /** Finishes activation: credentials set, account active, failure counter cleared. */
  async activate(id: string, data: { secretQuestionId: string; secretAnswerHash: string; passwordHash: string | null }): Promise<void> {
    await this.prisma.account.update({
      where: { id },
      data: { ...data, status: 'active', activatedAt: new Date(), failedAttempts: 0 },
    });
  }

  /** Sets (or, with null, removes) the account's password hash. */
  async setPassword(id: string, passwordHash: string | null): Promise<void> {
    await this.prisma.account.update({ where: { id }, data: { passwordHash } });
  }

  /** A new password after recovery: the failure counter starts again (a lock stays until unlocked). */
  async resetPassword(id: string, passwordHash: string): Promise<void> {
    await this.prisma.account.update({ where: { id }, data: { passwordHash, failedAttempts: 0 } });
  }

  async setSecretQuestion(id: string, secretQuestionId: string, secretAnswerHash: string): Promise<void> {
    await this.prisma.account.update({ where: { id }, data: { secretQuestionId, secretAnswerHash } });
  }

  /**
   * Replaces the password hash with a stronger one of the same password, only while the stored hash is
   * still `current` (one statement), so a password changed meanwhile is never overwritten. True if replaced.
   */
  async upgradePasswordHash(id: string, current: string, upgraded: string): Promise<boolean> {
    const { count } = await this.prisma.account.updateMany({ where: { id, passwordHash: current }, data: { passwordHash: upgraded } });
    return count === 1;
  }

  /** As `upgradePasswordHash`, for the secret answer's hash. */
  async upgradeSecretAnswerHash(id: string, current: string, upgraded: string): Promise<boolean> {
    const { count } = await this.prisma.account.updateMany({ where: { id, secretAnswerHash: current }, data: { secretAnswerHash: upgraded } });
    return count === 1;
  }

  /**
   * Deletes an account with all its data: devices, events, flows and codes go by cascade; the
   * provider's sessions, grants and tokens naming it are removed too.
   */
  async delete(id: string): Promise<void> {
    await this.prisma.$transaction([
      this.prisma.$executeRaw`DELETE FROM oidc_payloads WHERE payload->>'accountId' = ${id}`,
      this.prisma.oneTimePassword.deleteMany({ where: { accountId: id } }),
      this.prisma.account.delete({ where: { id } }),
    ]);
  }

  /** Unlocks an account and clears its failure counter. Returns false when there is no such account. */
  async unlock(tenantId: string, userId: string): Promise<boolean> {
    const r = await this.prisma.account.updateMany({ where: { tenantId, userId }, data: { lockedAt: null, lockedUntil: null, failedAttempts: 0 } });
    return r.count > 0;
  }
}
