import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LoginFlow, PrismaClient } from './generated/client.js';

export type { LoginFlow } from './generated/client.js';

/** Persisted login flows, one per oidc-provider interaction. */
export class LoginFlowRepository {
  constructor(private readonly prisma: PrismaClient) {}

  findByInteraction(interactionUid: string): Promise<LoginFlow | null> {
    return this.prisma.loginFlow.findUnique({ where: { interactionUid } });
  }

  /**
   * Returns the interaction's flow, creating it on first sight. One atomic INSERT ... ON CONFLICT DO
   * NOTHING: parallel first requests of an interaction (Prisma's upsert is a read then a write) would
   * otherwise collide on the unique key.
   */
  async findOrCreate(input: { interactionUid: string; tenantId: string; clientId: string; expiresAt: Date }): Promise<LoginFlow> {
    // Every step after the first finds it: one read, as before.
    const existing = await this.findByInteraction(input.interactionUid);
    if (existing) return existing;
    // Only a concurrent delete (housekeeping of an expired flow) can take it away in between: once more.
    for (let attempt = 0; attempt < 2; attempt++) {
      await this.prisma.$executeRaw`
        INSERT INTO login_flows (id, interaction_uid, tenant_id, client_id, expires_at, updated_at)
        VALUES (${randomUUID()}::uuid, ${input.interactionUid}, ${input.tenantId}, ${input.clientId}, ${input.expiresAt}, now())
        ON CONFLICT (interaction_uid) DO NOTHING`;
      const flow = await this.findByInteraction(input.interactionUid);
      if (flow) return flow;
    }
    throw new Error(`login flow of ${input.interactionUid} vanished twice`);
  }

  /**
   * The flow once it has left `state` (a concurrent request moving it on), or as it is after about
   * two seconds. For a request that lost a race to an identical one and answers with its outcome.
   */
  async settledFrom(interactionUid: string, state: string): Promise<LoginFlow | null> {
    let flow = await this.findByInteraction(interactionUid);
    for (let i = 0; i < 100 && flow?.state === state; i++) {
      await sleep(20);
      flow = await this.findByInteraction(interactionUid);
    }
    return flow;
  }

  update(id: string, data: Partial<Pick<LoginFlow, 'accountId' | 'submittedUserId' | 'method' | 'completedFactors' | 'state'>>): Promise<LoginFlow> {
    return this.prisma.loginFlow.update({ where: { id }, data });
  }

  /**
   * Moves the flow from one state to another only if it is still in the first one, so two
   * concurrent submissions can't both advance it.
   */
  async transition(id: string, from: string, data: Partial<Pick<LoginFlow, 'accountId' | 'submittedUserId' | 'method' | 'completedFactors' | 'state'>>): Promise<boolean> {
    const r = await this.prisma.loginFlow.updateMany({ where: { id, state: from }, data });
    return r.count === 1;
  }

  async deleteExpired(now = new Date()): Promise<number> {
    const r = await this.prisma.loginFlow.deleteMany({ where: { expiresAt: { lt: now } } });
    return r.count;
  }
}
