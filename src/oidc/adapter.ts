import { errors, type Adapter, type AdapterPayload } from 'oidc-provider';
import type { OidcPayloadRepository } from '../persistence/oidc-payload.repository.js';

/**
 * oidc-provider's storage adapter over the application database, so sessions, interactions, codes
 * and tokens are shared by every instance behind a load balancer.
 */
export function createAdapterFactory(repo: OidcPayloadRepository): (name: string) => Adapter {
  return (name: string): Adapter => ({
    async upsert(id: string, payload: AdapterPayload, expiresIn: number) {
      await repo.upsert(name, id, payload as Record<string, unknown>, expiresIn);
    },
    async find(id: string) {
      return (await repo.find(name, id)) as AdapterPayload | undefined;
    },
    async findByUserCode(userCode: string) {
      return (await repo.findByUserCode(name, userCode)) as AdapterPayload | undefined;
    },
    async findByUid(uid: string) {
      return (await repo.findByUid(name, uid)) as AdapterPayload | undefined;
    },
    async consume(id: string) {
      const { consumed, grantId } = await repo.consume(name, id);
      if (consumed) return;
      // Another request used it first (two token requests with one code, or one refresh token, at the
      // same moment), or it is gone. Refused as oidc-provider refuses a later reuse: invalid_grant, and
      // the grant revoked with every token issued from it (RFC 6749 4.1.2), the winner's included.
      if (grantId) await repo.revokeGrant(grantId);
      throw new errors.InvalidGrant(`${name} already consumed`);
    },
    async destroy(id: string) {
      await repo.destroy(name, id);
    },
    async revokeByGrantId(grantId: string) {
      await repo.revokeByGrantId(grantId);
    },
  });
}
