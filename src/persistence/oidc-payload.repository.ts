import type { PrismaClient } from './generated/client.js';
import { Prisma } from './generated/client.js';

/** A stored oidc-provider model instance (session, interaction, code, token, grant...). */
export type OidcPayloadData = Record<string, unknown>;

/** Storage behind oidc-provider's adapter interface, shared by every instance on the same database. */
export class OidcPayloadRepository {
  constructor(private readonly prisma: PrismaClient) {}

  async upsert(type: string, id: string, payload: OidcPayloadData, expiresInSeconds: number | undefined): Promise<void> {
    const expiresAt = expiresInSeconds ? new Date(Date.now() + expiresInSeconds * 1000) : null;
    const data = {
      payload: payload as Prisma.InputJsonValue,
      grantId: typeof payload.grantId === 'string' ? payload.grantId : null,
      userCode: typeof payload.userCode === 'string' ? payload.userCode : null,
      uid: typeof payload.uid === 'string' ? payload.uid : null,
      expiresAt,
    };
    await this.prisma.oidcPayload.upsert({ where: { id_type: { id, type } }, create: { id, type, ...data }, update: data });
  }

  private async findWhere(where: Prisma.OidcPayloadWhereInput): Promise<OidcPayloadData | undefined> {
    const row = await this.prisma.oidcPayload.findFirst({ where });
    if (!row) return undefined;
    if (row.expiresAt && row.expiresAt.getTime() <= Date.now()) return undefined;
    const payload = row.payload as OidcPayloadData;
    return row.consumedAt ? { ...payload, consumed: Math.floor(row.consumedAt.getTime() / 1000) } : payload;
  }

  find(type: string, id: string) {
    return this.findWhere({ id, type });
  }
  findByUid(type: string, uid: string) {
    return this.findWhere({ uid, type });
  }
  findByUserCode(type: string, userCode: string) {
    return this.findWhere({ userCode, type });
  }

  async consume(type: string, id: string): Promise<void> {
    await this.prisma.oidcPayload.updateMany({ where: { id, type }, data: { consumedAt: new Date() } });
  }
  async destroy(type: string, id: string): Promise<void> {
    await this.prisma.oidcPayload.deleteMany({ where: { id, type } });
  }
  async revokeByGrantId(grantId: string): Promise<void> {
    await this.prisma.oidcPayload.deleteMany({ where: { grantId } });
  }
  /** Purges rows past their expiry (a periodic job keeps the table small; expired rows are already ignored). */
  async deleteExpired(now = new Date()): Promise<number> {
    const r = await this.prisma.oidcPayload.deleteMany({ where: { expiresAt: { lt: now } } });
    return r.count;
  }
}
