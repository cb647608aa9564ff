import type { Passkey, PrismaClient } from './generated/client.js';
import { batchDelete, purgeInBatches, type PurgeOptions } from './purge.js';
import type { Sql } from './sql.js';

export type { Passkey } from './generated/client.js';

export interface NewPasskey {
  accountId: string;
  deviceId: string | null;
  credentialId: string;
  publicKey: Uint8Array;
  counter: number;
  transports: string[];
  deviceType: string;
  backedUp: boolean;
  aaguid: string | null;
  name: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export type ChallengePurpose = 'login' | 'register';

/** A passkey with its account's tenant, as an assertion finds it by credential ID. */
export type PasskeyWithOwner = Passkey & { account: { tenantId: string; userId: string } };

/** The passkeys (WebAuthn credentials) of accounts, and the challenges of their ceremonies. */
export class PasskeyRepository {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly sql: Sql,
  ) {}

  listForAccount(accountId: string): Promise<Passkey[]> {
    return this.prisma.passkey.findMany({ where: { accountId }, orderBy: [{ createdAt: 'asc' }, { id: 'asc' }] });
  }

  countForAccount(accountId: string): Promise<number> {
    return this.prisma.passkey.count({ where: { accountId } });
  }

  findByCredentialId(credentialId: string): Promise<PasskeyWithOwner | null> {
    return this.prisma.passkey.findUnique({ where: { credentialId }, include: { account: { select: { tenantId: true, userId: true } } } });
  }

  /** Null when the credential is registered already (to this or another account). */
  async create(input: NewPasskey): Promise<Passkey | null> {
    try {
      return await this.prisma.passkey.create({ data: { ...input, publicKey: Buffer.from(input.publicKey), counter: BigInt(input.counter) } });
    } catch (e) {
      if ((e as { code?: string }).code === 'P2002') return null;
      throw e;
    }
  }

  /** False when the account has no such passkey (an id that is not even a UUID included). */
  async rename(accountId: string, id: string, name: string): Promise<boolean> {
    if (!UUID.test(id)) return false;
    const r = await this.prisma.passkey.updateMany({ where: { id, accountId }, data: { name } });
    return r.count === 1;
  }

  async delete(accountId: string, id: string): Promise<Passkey | null> {
    if (!UUID.test(id)) return null;
    return this.prisma.$transaction(async (tx) => {
      const found = await tx.passkey.findFirst({ where: { id, accountId } });
      if (!found) return null;
      await tx.passkey.delete({ where: { id } });
      return found;
    });
  }

  /**
   * Deletes one passkey of an account, unless the account's login method (read under a lock on the
   * account row, so two deletes at once take turns) is one of `keepOneFor` and it is the last one.
   * Null when the account has no such passkey.
   */
  async deleteUnlessLast(accountId: string, id: string, keepOneFor: readonly string[]): Promise<Passkey | 'last' | null> {
    return this.prisma.$transaction(async (tx) => {
      const rows = await tx.$queryRaw<Array<{ login_method: string }>>`SELECT login_method FROM accounts WHERE id = ${accountId}::uuid FOR UPDATE`;
      const found = rows[0] ? await tx.passkey.findFirst({ where: { id, accountId } }) : null;
      if (!found) return null;
      if (keepOneFor.includes(rows[0]!.login_method) && (await tx.passkey.count({ where: { accountId } })) <= 1) return 'last';
      await tx.passkey.delete({ where: { id } });
      return found;
    });
  }

  /**
   * Records a use: the counter moves from `from` to `to` only if no other assertion moved it first
   * (compare-and-set), so two uses of a cloned authenticator cannot both pass.
   */
  async recordUse(id: string, from: bigint, to: number, backedUp: boolean): Promise<boolean> {
    const r = await this.prisma.passkey.updateMany({ where: { id, counter: from }, data: { counter: BigInt(to), backedUp, lastUsedAt: new Date() } });
    return r.count === 1;
  }

  /** Raw SQL: the user-ID page of a tenant offering passkeys stores one on every view. */
  async issueChallenge(input: { challenge: string; purpose: ChallengePurpose; binding: string; accountId: string | null; expiresAt: Date }): Promise<void> {
    await this.sql.query('INSERT INTO webauthn_challenges (challenge, purpose, binding, account_id, expires_at) VALUES ($1, $2, $3, $4::uuid, $5)', [
      input.challenge,
      input.purpose,
      input.binding,
      input.accountId,
      input.expiresAt,
    ]);
  }

  /** Takes a challenge (once: a second use finds nothing) if it is unexpired and was issued for this purpose and binding. */
  async consumeChallenge(challenge: string, purpose: ChallengePurpose, binding: string): Promise<{ accountId: string | null } | null> {
    const rows = await this.prisma.$queryRaw<Array<{ account_id: string | null }>>`
      DELETE FROM webauthn_challenges
       WHERE challenge = ${challenge} AND purpose = ${purpose} AND binding = ${binding} AND expires_at > now()
   RETURNING account_id::text`;
    const row = rows[0];
    return row ? { accountId: row.account_id } : null;
  }

  /** Challenges past their expiry, in batches (housekeeping). */
  purgeExpiredChallenges(before: Date, opts: PurgeOptions): Promise<number> {
    return purgeInBatches(this.sql, batchDelete('webauthn_challenges', 'SELECT ctid FROM webauthn_challenges WHERE expires_at < $2 LIMIT $1'), [before], opts);
  }
}
