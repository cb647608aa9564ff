import { errors, type Adapter, type AdapterPayload } from 'oidc-provider';
import { isDatabaseUnavailable } from '../persistence/database-unavailable.js';
import { SingleUseLost, type OidcPayloadRepository } from '../persistence/oidc-payload.repository.js';

/**
 * oidc-provider's storage adapter over the application database, so sessions, interactions, codes
 * and tokens are shared by every instance behind a load balancer.
 */
export function createAdapterFactory(repo: OidcPayloadRepository): (name: string) => Adapter {
  return (name: string): Adapter => ({
    async upsert(id: string, payload: AdapterPayload, expiresIn: number) {
      await lostAsInvalidGrant(repo.upsert(name, id, payload as Record<string, unknown>, expiresIn));
    },
    async find(id: string) {
      return (await lostAsInvalidGrant(repo.find(name, id))) as AdapterPayload | undefined;
    },
    async findByUserCode(userCode: string) {
      return (await lostAsInvalidGrant(repo.findByUserCode(name, userCode))) as AdapterPayload | undefined;
    },
    async findByUid(uid: string) {
      return (await lostAsInvalidGrant(repo.findByUid(name, uid))) as AdapterPayload | undefined;
    },
    async consume(id: string) {
      const { consumed, grantId } = await lostAsInvalidGrant(repo.consume(name, id));
      if (consumed) return;
      // Another request used it first (two token requests with one code, or one refresh token, at the
      // same moment), or it is gone. Refused as oidc-provider refuses a later reuse: invalid_grant, and
      // the grant revoked with every token issued from it (RFC 6749 4.1.2), the winner's included.
      if (grantId) await repo.revokeGrant(grantId);
      throw new errors.InvalidGrant(`${name} already consumed`);
    },
    async destroy(id: string) {
      await lostAsInvalidGrant(repo.destroy(name, id));
    },
    async revokeByGrantId(grantId: string) {
      await lostAsInvalidGrant(repo.revokeByGrantId(grantId));
    },
  });
}

/**
 * In a token request the code's consume is sent with the request's next statement (see
 * OidcPayloadRepository.flush); when another request had used the code first, that statement's caller
 * gets invalid_grant, as from consume itself (the grant is already revoked). A database that cannot
 * answer is temporarily_unavailable (oidcUnavailable).
 */
async function lostAsInvalidGrant<T>(op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (e) {
    if (e instanceof SingleUseLost) throw new errors.InvalidGrant(e.message);
    throw oidcUnavailable(e);
  }
}

/**
 * A database outage (down, unreachable, past DATABASE_TIMEOUT_SECONDS) met inside oidc-provider's
 * handling, as its `temporarily_unavailable` with status 503: the token endpoint answers it as JSON,
 * the authorization endpoint sends it back to the site (RFC 6749 4.1.2.1) or shows the error page,
 * instead of a server_error 500. Any other error is returned as it is.
 */
export function oidcUnavailable(e: unknown): unknown {
  if (!isDatabaseUnavailable(e)) return e;
  const unavailable = new errors.TemporarilyUnavailable('the service is temporarily unavailable; try again shortly', { cause: e });
  unavailable.status = 503;
  unavailable.statusCode = 503;
  return unavailable;
}

/**
 * The response to a token request whose held consume found the code (or refresh token) used by
 * another request when its writes were sent at the request's end: what oidc-provider answers to a
 * reused code, in place of the tokens it had prepared (none of them was stored).
 */
export function invalidGrantResponse(lost: SingleUseLost): { status: number; body: Record<string, string> } {
  const e = new errors.InvalidGrant(lost.message);
  return { status: e.status, body: { error: e.error, error_description: e.error_description ?? 'grant request is invalid' } };
}
