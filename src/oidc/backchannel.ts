import type { AppConfig, TenantDirectory } from '../config/index.js';
import type { AccountRepository } from '../persistence/account.repository.js';
import type { OidcPayloadRepository } from '../persistence/oidc-payload.repository.js';
import { loadSigningKeys } from './keys.js';
import { createProvider, type Provider } from './provider.js';

/** One site a session signed in to: its client_id and the `sid` its ID tokens carried. */
export interface SiteSignIn {
  clientId: string;
  sid?: string;
}

export interface BackchannelOutcome {
  clientId: string;
  ok: boolean;
  error?: string;
}

// Client#backchannelLogout exists on oidc-provider 9's clients (end_session uses it) but is not in its types.
interface LogoutCapableClient {
  backchannelLogoutUri?: string;
  backchannelLogout(sub: string, sid: string | undefined): Promise<void>;
}

/**
 * OpenID Connect Back-Channel Logout for sessions ended outside the provider's end_session endpoint
 * (the account area's "sign out" of another session and "sign out everywhere" delete them from
 * storage). oidc-provider's own client method signs and posts the logout token, so it is the same
 * token end_session sends: iss, aud, sub, events, jti, and sid when the client requires it.
 */
export class BackchannelLogout {
  constructor(private readonly provider: Provider) {}

  /** Tells every site with a backchannel_logout_uri; never throws (a site that is down must not block a sign-out). */
  async notify(accountId: string, signIns: SiteSignIn[]): Promise<BackchannelOutcome[]> {
    const seen = new Set<string>();
    const unique = signIns.filter((s) => {
      const key = `${s.clientId}\n${s.sid ?? ''}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
    const outcomes = await Promise.all(
      unique.map(async ({ clientId, sid }): Promise<BackchannelOutcome | undefined> => {
        const client = (await this.provider.Client.find(clientId).catch(() => undefined)) as unknown as LogoutCapableClient | undefined;
        if (!client?.backchannelLogoutUri || typeof client.backchannelLogout !== 'function') return undefined;
        try {
          await client.backchannelLogout(accountId, sid);
          return { clientId, ok: true };
        } catch (e) {
          return { clientId, ok: false, error: e instanceof Error ? e.message : String(e) };
        }
      }),
    );
    return outcomes.filter((o): o is BackchannelOutcome => !!o);
  }
}

/**
 * Back-channel logout for a process without the HTTP server (the admin CLI): a provider instance
 * with the same configuration and signing keys, used only to sign and post logout tokens.
 */
export async function backchannelNotifier(
  config: AppConfig,
  deps: { tenants: TenantDirectory; accounts: AccountRepository; payloads: OidcPayloadRepository; secrets: { cookieKeys: string[] } },
): Promise<BackchannelLogout> {
  const provider = createProvider({
    config,
    tenants: deps.tenants,
    accounts: deps.accounts,
    payloads: deps.payloads,
    jwks: await loadSigningKeys(config),
    cookieKeys: deps.secrets.cookieKeys,
    clientCertificate: () => undefined,
  });
  return new BackchannelLogout(provider);
}
