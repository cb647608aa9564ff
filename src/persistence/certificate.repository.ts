import type { Certificate, PrismaClient } from './generated/client.js';

export type { Certificate } from './generated/client.js';

export type NewCertificate = Omit<Certificate, 'id' | 'createdAt' | 'revokedAt' | 'reason'>;

/** Client certificates issued by the internal CA. */
export class CertificateRepository {
  constructor(private readonly prisma: PrismaClient) {}

  /**
   * Stores a new certificate for a device and revokes the device's previous live one in the same
   * transaction, so a device never has two live certificates.
   */
  async createReplacing(data: NewCertificate, reason: string): Promise<Certificate> {
    return this.prisma.$transaction(async (tx) => {
      if (data.deviceId) await tx.certificate.updateMany({ where: { deviceId: data.deviceId, revokedAt: null }, data: { revokedAt: new Date(), reason } });
      return tx.certificate.create({ data });
    });
  }

  findByFingerprint(fingerprint: string): Promise<Certificate | null> {
    return this.prisma.certificate.findUnique({ where: { fingerprint } });
  }

  findById(id: string): Promise<Certificate | null> {
    return this.prisma.certificate.findUnique({ where: { id } });
  }

  /** The device's current (newest, unrevoked) certificate of this account. */
  findCurrentForDevice(accountId: string, deviceId: string): Promise<Certificate | null> {
    return this.prisma.certificate.findFirst({ where: { accountId, deviceId, revokedAt: null }, orderBy: { createdAt: 'desc' } });
  }

  listForAccount(accountId: string): Promise<Certificate[]> {
    return this.prisma.certificate.findMany({ where: { accountId }, orderBy: [{ createdAt: 'desc' }] });
  }

  /** Whether the account has a certificate that is unrevoked, unexpired and on a device. */
  async hasLive(accountId: string, now = new Date()): Promise<boolean> {
    const n = await this.prisma.certificate.count({ where: { accountId, revokedAt: null, deviceId: { not: null }, notBefore: { lte: now }, notAfter: { gt: now } } });
    return n > 0;
  }

  /** Revokes the matching unrevoked certificates; returns how many. */
  /** `deviceId: null` selects certificates whose device has been deleted. */
  async revoke(where: { id?: string; deviceId?: string | null; accountId?: string }, reason: string): Promise<number> {
    const r = await this.prisma.certificate.updateMany({ where: { ...where, revokedAt: null }, data: { revokedAt: new Date(), reason } });
    return r.count;
  }

  /**
   * What the CRL lists: revoked certificates and those whose device is gone, while unexpired (RFC 5280
   * lets expired entries drop off).
   */
  async listForCrl(now = new Date()): Promise<Array<Pick<Certificate, 'serial' | 'revokedAt' | 'reason' | 'createdAt'>>> {
    return this.prisma.certificate.findMany({
      where: { notAfter: { gt: now }, OR: [{ revokedAt: { not: null } }, { deviceId: null }] },
      select: { serial: true, revokedAt: true, reason: true, createdAt: true },
      orderBy: { serial: 'asc' },
    });
  }
}
