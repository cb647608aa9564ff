import Provider, { interactionPolicy, type Configuration, type KoaContextWithOIDC, type ClientMetadata } from 'oidc-provider';
import type { AppConfig, ClientConfig, TenantDirectory } from '../config/index.js';
import { pageLocals, renderPage } from '../http/pages.js';
import { negotiateLocale } from '../i18n/index.js';
import { ACR_VALUES } from '../login/login-methods.js';
import type { AccountRepository } from '../persistence/account.repository.js';
import type { OidcPayloadRepository } from '../persistence/oidc-payload.repository.js';
import { MANAGEMENT_SCOPE } from './access-tokens.js';
import { createAdapterFactory } from './adapter.js';
import type { Jwks } from './keys.js';

export type { Provider };

/** Scopes a relying site may ask for at the authorization endpoint. */
export const OIDC_SCOPES = ['openid', 'profile', 'email', 'offline_access'] as const;

export interface ProviderDeps {
  config: AppConfig;
  tenants: TenantDirectory;
  accounts: AccountRepository;
  payloads: OidcPayloadRepository;
  jwks: Jwks;
  cookieKeys: string[];
}

/** Client metadata as oidc-provider wants it, from a client registered in config/tenants.yaml. */
export function toClientMetadata(client: ClientConfig): ClientMetadata {
  return {
    client_id: client.client_id,
    ...(client.client_secret
      ? { client_secret: client.client_secret, token_endpoint_auth_method: client.token_endpoint_auth_method }
      : { token_endpoint_auth_method: 'none' }),
    client_name: client.name,
    redirect_uris: client.redirect_uris,
    post_logout_redirect_uris: client.post_logout_redirect_uris,
    grant_types: ['authorization_code', 'refresh_token', ...client.extra_grant_types],
    // An allow-list, so only back-office clients (client_credentials) can obtain the management scope.
    scope: [...OIDC_SCOPES, ...(client.extra_grant_types.includes('client_credentials') ? [MANAGEMENT_SCOPE] : [])].join(' '),
    response_types: ['code'],
    // auth_time in every ID token, so relying sites can always judge how fresh a login is.
    require_auth_time: true,
  };
}

function localeOf(ctx: KoaContextWithOIDC) {
  const uiLocales = (ctx.oidc?.params?.ui_locales as string | undefined) ?? undefined;
  return negotiateLocale([ctx.query.lang as string | undefined, ctx.cookies.get('lang'), uiLocales], ctx.get('accept-language'));
}

/**
 * The OpenID Provider. This folder is the only one that imports oidc-provider: everything else sees
 * the Provider through src/oidc/interactions.ts.
 */
export function createProvider(deps: ProviderDeps): Provider {
  const { config, tenants, accounts } = deps;
  const clients = tenants.allClients().map(({ client }) => toClientMetadata(client));
  const isFirstParty = (clientId: string) => tenants.client(clientId)?.client.first_party === true;

  const policy = interactionPolicy.base();
  // A session of one tenant's account must not sign in to another tenant's client: ask for a login.
  policy.get('login')?.checks.add(
    new interactionPolicy.Check('tenant_mismatch', 'the signed-in account belongs to another tenant', async (ctx) => {
      const accountId = ctx.oidc.session?.accountId;
      if (!accountId || ctx.oidc.result?.login) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      const account = await accounts.findById(accountId);
      const tenant = tenants.client(ctx.oidc.client?.clientId ?? '')?.tenant;
      return !account || !tenant || account.tenantId !== tenant.id ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }),
  );

  const configuration: Configuration = {
    adapter: createAdapterFactory(deps.payloads),
    clients,
    jwks: deps.jwks as Configuration['jwks'],
    cookies: { keys: deps.cookieKeys },
    acrValues: ACR_VALUES,
    claims: {
      acr: null,
      amr: null,
      auth_time: null,
      sid: null,
      iss: null,
      // Every ID token says how and when the user signed in (RFC 8176 amr, the method's acr).
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      profile: ['preferred_username'],
      email: ['email', 'email_verified'],
    },
    scopes: [...OIDC_SCOPES, MANAGEMENT_SCOPE],
    // Relying sites read preferred_username and email straight from the ID token.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      // Tenants' back offices call the management API with client_credentials tokens (opaque, stored).
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          const locale = localeOf(ctx);
          ctx.type = 'html';
          ctx.body = renderPage('logout/confirm', { ...pageLocals(locale, ctx.method === 'GET' ? ctx.url : undefined), form, pageTitle: undefined });
        },
        async postLogoutSuccessSource(ctx) {
          const locale = localeOf(ctx);
          ctx.type = 'html';
          ctx.body = renderPage('logout/done', { ...pageLocals(locale), clientName: ctx.oidc.client?.clientName });
        },
      },
    },
    interactions: {
      policy,
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    ttl: {
      AccessToken: 600,
      ClientCredentials: 600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: config.loginFlowTtlSeconds,
      Session: 8 * 3600,
      Grant: 14 * 24 * 3600,
      RefreshToken: 14 * 24 * 3600,
    },
    // Refresh tokens for every client allowed the grant, without requiring prompt=consent.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    async loadExistingGrant(ctx) {
      const clientId = ctx.oidc.client!.clientId;
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session!.grantIdFor(clientId);
      const grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
      if (!isFirstParty(clientId)) return grant;
      // First-party clients registered by the integrator never ask for consent.
      const firstPartyGrant = grant ?? new ctx.oidc.provider.Grant({ clientId, accountId: ctx.oidc.session!.accountId });
      firstPartyGrant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
      const claims = [...ctx.oidc.requestParamClaims];
      if (claims.length) firstPartyGrant.addOIDCClaims(claims);
      await firstPartyGrant.save();
      return firstPartyGrant;
    },
    async findAccount(_ctx, sub) {
      const account = await accounts.findById(sub);
      if (!account) return undefined;
      return {
        accountId: account.id,
        async claims() {
          const email = account.devices.find((d) => d.verifiedAt)?.email;
          return {
            sub: account.id,
            preferred_username: account.userId,
            ...(email ? { email, email_verified: true } : {}),
          };
        },
      };
    },
    async renderError(ctx, out) {
      const locale = localeOf(ctx);
      ctx.type = 'html';
      ctx.body = renderPage('error', {
        ...pageLocals(locale),
        messageKey: out.error === 'invalid_request' || out.error === 'invalid_client' || out.error === 'invalid_redirect_uri' ? 'common:errors.bad_request' : 'common:errors.session_expired',
        detail: out.error_description,
      });
    },
  };

  const provider = new Provider(config.issuer, configuration);
  provider.proxy = config.trustProxy;
  return provider;
}
