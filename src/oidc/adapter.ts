import type { Adapter, AdapterPayload } from 'oidc-provider';
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
      await repo.consume(name, id);
    },
    async destroy(id: string) {
      await repo.destroy(name, id);
    },
    async revokeByGrantId(grantId: string) {
      await repo.revokeByGrantId(grantId);
    },
  });
}
