import type { OneTimePassword, PrismaClient } from './generated/client.js';

export type { OneTimePassword } from './generated/client.js';

/** One-time passwords, stored as HMACs only. */
export class OneTimePasswordRepository {
  constructor(private readonly prisma: PrismaClient) {}

  /** Stores a new code for a flow and retires the flow's earlier unused codes (a resend replaces them). */
  async issue(input: { flowId: string | null; accountId: string | null; purpose: string; codeHmac: string; expiresAt: Date }): Promise<OneTimePassword> {
    return this.prisma.$transaction(async (tx) => {
      if (input.flowId) {
        await tx.oneTimePassword.updateMany({
          where: { flowId: input.flowId, purpose: input.purpose, consumedAt: null },
          data: { consumedAt: new Date() },
        });
      }
      return tx.oneTimePassword.create({ data: input });
    });
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
  latestForFlow(flowId: string, purpose: string): Promise<OneTimePassword | null> {
    return this.prisma.oneTimePassword.findFirst({ where: { flowId, purpose }, orderBy: { createdAt: 'desc' } });
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
    const r = await this.prisma.oneTimePassword.updateMany({ where: { id, consumedAt: null, expiresAt: { gt: now } }, data: { consumedAt: now } });
    return r.count === 1;
  }
}
