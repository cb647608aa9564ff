import type { Provider } from './provider.js';

/** The management API's scope: only for client_credentials tokens of clients allowed that grant. */
export const MANAGEMENT_SCOPE = 'management';

/** What an API needs to know about a bearer token presented to it. */
export interface VerifiedAccessToken {
  clientId: string;
  scopes: string[];
  expired: boolean;
}

// Opaque token values are 43 base64url characters; anything far longer is not ours.
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{20,256}$/;

/**
 * Verifies client_credentials access tokens in-process: they are opaque and stored through our
 * adapter, so looking one up is the verification (no resource indicator, hence no JWT). Access
 * tokens of users (authorization code flow) are a different model and never match here.
 */
export class ClientCredentialsTokens {
  constructor(private readonly provider: Provider) {}

  async verify(token: string): Promise<VerifiedAccessToken | undefined> {
    if (!TOKEN_SHAPE.test(token)) return undefined;
    const found = await this.provider.ClientCredentials.find(token, { ignoreExpiration: true });
    if (!found?.clientId) return undefined;
    // A DPoP- or certificate-bound token presented as a plain bearer token proves nothing.
    if (found.isSenderConstrained()) return undefined;
    return { clientId: found.clientId, scopes: [...found.scopes].filter(Boolean), expired: found.isExpired };
  }
}
