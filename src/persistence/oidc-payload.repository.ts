import type { PrismaClient } from './generated/client.js';

/** A stored oidc-provider model instance (session, interaction, code, token, grant...). */
export type OidcPayloadData = Record<string, unknown>;

interface Row {
  payload: OidcPayloadData;
  expires_at: Date | null;
  consumed_at: Date | null;
}

/**
 * Storage behind oidc-provider's adapter interface, shared by every instance on the same database.
 * Raw SQL on purpose: these run many times per login, and Prisma's query compiler costs more CPU
 * than the statements themselves (measured with the benchmark's profile).
 */
export class OidcPayloadRepository {
  constructor(private readonly prisma: PrismaClient) {}

  async upsert(type: string, id: string, payload: OidcPayloadData, expiresInSeconds: number | undefined): Promise<void> {
    const expiresAt = expiresInSeconds ? new Date(Date.now() + expiresInSeconds * 1000) : null;
    const str = (v: unknown) => (typeof v === 'string' ? v : null);
    await this.prisma.$executeRaw`
      INSERT INTO oidc_payloads (id, type, payload, grant_id, user_code, uid, expires_at)
      VALUES (${id}, ${type}, ${JSON.stringify(payload)}::jsonb, ${str(payload.grantId)}, ${str(payload.userCode)}, ${str(payload.uid)}, ${expiresAt})
      ON CONFLICT (id, type) DO UPDATE
        SET payload = EXCLUDED.payload, grant_id = EXCLUDED.grant_id, user_code = EXCLUDED.user_code,
            uid = EXCLUDED.uid, expires_at = EXCLUDED.expires_at`;
  }

  private present(rows: Row[]): OidcPayloadData | undefined {
    const row = rows[0];
    if (!row) return undefined;
    if (row.expires_at && new Date(row.expires_at).getTime() <= Date.now()) return undefined;
    const payload = typeof row.payload === 'string' ? (JSON.parse(row.payload) as OidcPayloadData) : row.payload;
    return row.consumed_at ? { ...payload, consumed: Math.floor(new Date(row.consumed_at).getTime() / 1000) } : payload;
  }

  async find(type: string, id: string) {
    return this.present(await this.prisma.$queryRaw<Row[]>`SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE id = ${id} AND type = ${type}`);
  }
  async findByUid(type: string, uid: string) {
    return this.present(await this.prisma.$queryRaw<Row[]>`SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE uid = ${uid} AND type = ${type} LIMIT 1`);
  }
  async findByUserCode(type: string, userCode: string) {
    return this.present(await this.prisma.$queryRaw<Row[]>`SELECT payload, expires_at, consumed_at FROM oidc_payloads WHERE user_code = ${userCode} AND type = ${type} LIMIT 1`);
  }

  async consume(type: string, id: string): Promise<void> {
    await this.prisma.$executeRaw`UPDATE oidc_payloads SET consumed_at = now() WHERE id = ${id} AND type = ${type}`;
  }
  async destroy(type: string, id: string): Promise<void> {
    await this.prisma.$executeRaw`DELETE FROM oidc_payloads WHERE id = ${id} AND type = ${type}`;
  }
  async revokeByGrantId(grantId: string): Promise<void> {
    await this.prisma.$executeRaw`DELETE FROM oidc_payloads WHERE grant_id = ${grantId}`;
  }
  /** Purges rows past their expiry (a periodic job keeps the table small; expired rows are already ignored). */
  async deleteExpired(now = new Date()): Promise<number> {
    return this.prisma.$executeRaw`DELETE FROM oidc_payloads WHERE expires_at < ${now}`;
  }
}
