import { Prisma, type PrismaClient } from './generated/client.js';

/** What one client's sign-in through a session left in it: the ID tokens' `sid` and the grant. */
export interface SessionAuthorization {
  sid?: string;
  grantId?: string;
  persistsLogout?: boolean;
}

/** An oidc-provider Session of an account, as stored in `oidc_payloads` (the fields this app reads). */
export interface StoredSession {
  /** Stable for the session's life (the cookie value, `jti`, rotates at every login). */
  uid: string;
  accountId: string;
  /** When the user last proved who they are, epoch seconds. */
  loginTs?: number;
  acr?: string;
  amr?: string[];
  /** Per client_id. */
  authorizations: Record<string, SessionAuthorization>;
  expiresAt: Date | null;
}

/**
 * How long a removed session or grant stays refused to late saves (oidc_revoked): far longer than any
 * request that read it before takes to finish.
 */
const REVOKED_KEPT = Prisma.sql`interval '1 hour'`;

interface Row {
  payload: Record<string, unknown> | string;
  expires_at: Date | null;
}

function toSession(row: Row): StoredSession | undefined {
  const p = typeof row.payload === 'string' ? (JSON.parse(row.payload) as Record<string, unknown>) : row.payload;
  if (typeof p.uid !== 'string' || typeof p.accountId !== 'string') return undefined;
  const authorizations = p.authorizations && typeof p.authorizations === 'object' ? (p.authorizations as Record<string, SessionAuthorization>) : {};
  return {
    uid: p.uid,
    accountId: p.accountId,
    loginTs: typeof p.loginTs === 'number' ? p.loginTs : undefined,
    acr: typeof p.acr === 'string' ? p.acr : undefined,
    amr: Array.isArray(p.amr) ? p.amr.filter((v): v is string => typeof v === 'string') : undefined,
    authorizations,
    expiresAt: row.expires_at ? new Date(row.expires_at) : null,
  };
}

const grantIdsOf = (s: StoredSession) => Object.values(s.authorizations).flatMap((a) => (typeof a.grantId === 'string' ? [a.grantId] : []));

/**
 * oidc-provider's sessions, grants and tokens of one account, read and ended directly in its storage
 * (the same rows OidcPayloadRepository keeps for the adapter). Sessions, grants and user tokens all
 * carry `accountId` in their payload. The lookups by account scan the table's JSON (there is no
 * account column); they run on the sessions page and at sign-outs only, while the per-request check
 * (`isActive`) uses the indexed `uid` column.
 */
export class SessionRepository {
  constructor(private readonly prisma: PrismaClient) {}

  /** The account's unexpired sessions that completed a login, most recent login first. */
  async listForAccount(accountId: string): Promise<StoredSession[]> {
    const rows = await this.prisma.$queryRaw<Row[]>`
      SELECT payload, expires_at FROM oidc_payloads
      WHERE type = 'Session' AND payload->>'accountId' = ${accountId} AND (expires_at IS NULL OR expires_at > now())`;
    return rows
      .map(toSession)
      .filter((s): s is StoredSession => !!s)
      .sort((a, b) => (b.loginTs ?? 0) - (a.loginTs ?? 0));
  }

  /** The session whose sign-in to `clientId` was given `sid` (the ID token's claim). */
  async findBySid(accountId: string, clientId: string, sid: string): Promise<StoredSession | undefined> {
    return (await this.listForAccount(accountId)).find((s) => s.authorizations[clientId]?.sid === sid);
  }

  /** Whether the session still exists and has not expired (indexed; runs on every account-area request). */
  async isActive(uid: string): Promise<boolean> {
    const rows = await this.prisma.$queryRaw<Array<{ one: number }>>`
      SELECT 1 AS one FROM oidc_payloads WHERE uid = ${uid} AND type = 'Session' AND (expires_at IS NULL OR expires_at > now()) LIMIT 1`;
    return rows.length > 0;
  }

  /**
   * Ends one session of the account: the session row, and the grants its sign-ins made with their
   * tokens (so the sites' refresh tokens from that session stop working too). Returns the ended
   * session, or undefined when the account has no such session.
   */
  async deleteSession(accountId: string, uid: string): Promise<StoredSession | undefined> {
    // Refused to a late save first (see deleteAllForAccount), then removed.
    await this.prisma.$executeRaw`
      WITH s AS (SELECT id, payload FROM oidc_payloads WHERE type = 'Session' AND uid = ${uid} AND payload->>'accountId' = ${accountId})
      INSERT INTO oidc_revoked (id, type, expires_at)
      SELECT id, 'Session', now() + ${REVOKED_KEPT} FROM s
      UNION ALL
      SELECT a.value->>'grantId', 'Grant', now() + ${REVOKED_KEPT} FROM s, jsonb_each(s.payload->'authorizations') a WHERE a.value->>'grantId' IS NOT NULL
      ON CONFLICT (id, type) DO UPDATE SET expires_at = EXCLUDED.expires_at`;
    return this.prisma.$transaction(async (tx) => {
      const rows = await tx.$queryRaw<Row[]>`
        DELETE FROM oidc_payloads WHERE type = 'Session' AND uid = ${uid} AND payload->>'accountId' = ${accountId}
        RETURNING payload, expires_at`;
      const session = rows[0] ? toSession(rows[0]) : undefined;
      if (!session) return undefined;
      // A session holds one grant per site it signed in to: a few statements at most.
      for (const grantId of grantIdsOf(session)) {
        await tx.$executeRaw`DELETE FROM oidc_payloads WHERE grant_id = ${grantId} OR (type = 'Grant' AND id = ${grantId})`;
      }
      return session;
    });
  }

  /**
   * Ends everything the provider holds for the account: every session, grant, code and token
   * (whatever row names it in `accountId`; pending interactions keep it nested and expire by
   * themselves). Returns the sessions that were live, so their sites can be told. With
   * `keepSessionUid`, that one session of the account and its grants stay.
   */
  async deleteAllForAccount(accountId: string, opts: { keepSessionUid?: string } = {}): Promise<{ sessions: StoredSession[]; deleted: number }> {
    // A kept session keeps the grants its sign-ins hold (and their tokens); everything else goes.
    const kept = opts.keepSessionUid
      ? await this.prisma.$queryRaw<Row[]>`
          SELECT payload, expires_at FROM oidc_payloads WHERE type = 'Session' AND uid = ${opts.keepSessionUid} AND payload->>'accountId' = ${accountId}`
      : [];
    const keptSession = kept[0] ? toSession(kept[0]) : undefined;
    const keepUid = keptSession?.uid ?? '';
    const keepGrants = keptSession ? grantIdsOf(keptSession) : [];
    // Refused to a late save first, in a statement of its own: oidc-provider saves a session at the end
    // of every request that used it (and the first-party grant at every authorization), so a request
    // that read them before they go would otherwise store them again afterwards. Once this has
    // committed, such a save stores nothing (OidcPayloadRepository's upserts skip oidc_revoked); a save
    // already under way is removed by the DELETE below, which waits for its row, and marks what it
    // removes too (a session that began in between).
    await this.prisma.$executeRaw`
      INSERT INTO oidc_revoked (id, type, expires_at)
      SELECT id, type, now() + ${REVOKED_KEPT} FROM oidc_payloads
      WHERE payload->>'accountId' = ${accountId} AND type IN ('Session', 'Grant')
        AND NOT (type = 'Session' AND uid = ${keepUid})
        AND NOT (type = 'Grant' AND id = ANY(${keepGrants}::text[]))
      ON CONFLICT (id, type) DO UPDATE SET expires_at = EXCLUDED.expires_at`;
    const rows = await this.prisma.$queryRaw<Array<Row & { type: string }>>`
      WITH gone AS (
        DELETE FROM oidc_payloads WHERE payload->>'accountId' = ${accountId}
          AND NOT (type = 'Session' AND uid = ${keepUid})
          AND NOT (grant_id IS NOT NULL AND grant_id = ANY(${keepGrants}::text[]))
          AND NOT (type = 'Grant' AND id = ANY(${keepGrants}::text[]))
        RETURNING id, type, payload, expires_at),
      marked AS (
        INSERT INTO oidc_revoked (id, type, expires_at)
        SELECT id, type, now() + ${REVOKED_KEPT} FROM gone WHERE type IN ('Session', 'Grant')
        ON CONFLICT (id, type) DO NOTHING)
      SELECT type, payload, expires_at FROM gone`;
    const now = Date.now();
    const sessions = rows
      .filter((r) => r.type === 'Session' && (!r.expires_at || new Date(r.expires_at).getTime() > now))
      .map(toSession)
      .filter((s): s is StoredSession => !!s);
    return { sessions, deleted: rows.length };
  }
}
