import Provider, { interactionPolicy, type Configuration, type KoaContextWithOIDC, type ClientMetadata } from 'oidc-provider';
import { accountConsoleClientId, supportConsoleClientId, isResourceServer, type AppConfig, type ClientConfig, type TenantDirectory } from '../config/index.js';
import { pageLocals, renderPage } from '../http/pages.js';
import { LOCALES, negotiateLocale } from '../i18n/index.js';
import type { ClientCertificateReader } from '../http/client-certificate.js';
import { ACR_VALUES, isAtLeast, methodOfAcr, requiredMethod } from '../login/login-methods.js';
import type { AccountRepository } from '../persistence/account.repository.js';
import type { LoginHandoff } from '../login/login-handoff.js';
import type { OidcPayloadRepository } from '../persistence/oidc-payload.repository.js';
import { MANAGEMENT_SCOPE } from './access-tokens.js';
import { DATABASE_RETRY_AFTER_SECONDS } from '../persistence/database-unavailable.js';
import { createAdapterFactory, oidcUnavailable } from './adapter.js';
import { renderOidcError } from './error-hints.js';
import { createOutboundFetch } from './outbound-fetch.js';
import { signingAlgs, type Jwks } from './keys.js';
import { isLocked, type LockState } from '../lockout/account-lock.js';
import { CookieSigner } from '../http/cookie-signer.js';

export type { Provider };

/** Scopes a relying site may ask for at the authorization endpoint. */
export const OIDC_SCOPES = ['openid', 'profile', 'email', 'offline_access'] as const;

export interface ProviderDeps {
  config: AppConfig;
  tenants: TenantDirectory;
  accounts: AccountRepository;
  payloads: OidcPayloadRepository;
  /** Accounts of logins just completed on this instance (see LoginHandoff). */
  loginHandoff?: LoginHandoff;
  jwks: Jwks;
  cookieKeys: string[];
  /** The request's TLS client certificate (mutual-TLS listener or trusted proxy), for RFC 8705 binding. */
  clientCertificate: ClientCertificateReader;
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
    // Applied by oidc-provider as acr_values when a request has none, so they drive step-up too.
    ...(client.default_acr_values ? { default_acr_values: client.default_acr_values } : {}),
    ...(client.tls_client_certificate_bound_access_tokens ? { tls_client_certificate_bound_access_tokens: true } : {}),
    // With sid required, the site's ID tokens and logout tokens both carry sid, so it can match the session.
    ...(client.backchannel_logout_uri ? { backchannel_logout_uri: client.backchannel_logout_uri, backchannel_logout_session_required: true } : {}),
  };
}

type IntrospectionPolicy = NonNullable<NonNullable<NonNullable<Configuration['features']>['introspection']>['allowedPolicy']>;

/**
 * POST at /auth and /session/end (OpenID Connect Core 3.1.2.1, RP-Initiated Logout 1.0). A site's
 * form posts cross-site, and browsers send only SameSite=None cookies with it, so the provider's
 * session cookie must be SameSite=None, which browsers accept only when Secure: https issuers only.
 * oidc-provider marks its cookies Secure on https requests (behind a proxy: TRUST_PROXY). The short
 * cookies stay Lax: a top-level navigation may set them, and they are read only on same-site pages.
 */
export function acceptsHttpPost(issuer: string): boolean {
  return new URL(issuer).protocol === 'https:';
}

/** Only an activated, unlocked account may hold sessions and tokens. */
export function isSignInAllowed(account: { status: string } & LockState): boolean {
  return account.status === 'active' && !isLocked(account);
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
  // Discovery lists only what registered clients use (README, Endpoints): these follow the clients.
  // oidc-provider lets a client with a secret present it either way (header or body), and client
  // libraries pick one without asking (passport's sends it in the body), so both secret methods go together.
  const registeredAuth = new Set(clients.map((c) => c.token_endpoint_auth_method ?? 'client_secret_basic'));
  if (registeredAuth.has('client_secret_basic') || registeredAuth.has('client_secret_post')) registeredAuth.add('client_secret_basic').add('client_secret_post');
  const clientAuthMethods = [...registeredAuth];
  const hasBackOffice = clients.some((c) => c.grant_types?.includes('client_credentials'));
  const certificatesArrive = !!config.certificates.mtls.url || (!!config.certificates.clientCertHeader && config.certificates.trustedProxies.length > 0);
  const certificateBinding = certificatesArrive && clients.some((c) => c.tls_client_certificate_bound_access_tokens);
  const idTokenAlgs = signingAlgs(deps.jwks);
  const isFirstParty = (clientId: string) => tenants.client(clientId)?.client.first_party === true;

  const policy = interactionPolicy.base();
  // A session of one tenant's account must not sign in to another tenant's client: ask for a login.
  policy.get('login')?.checks.add(
    new interactionPolicy.Check('tenant_mismatch', 'the signed-in account belongs to another tenant', async (ctx) => {
      const accountId = ctx.oidc.session?.accountId;
      if (!accountId || ctx.oidc.result?.login) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      const accountTenant = await accounts.tenantOf(accountId);
      const tenant = tenants.client(ctx.oidc.client?.clientId ?? '')?.tenant;
      return !accountTenant || !tenant || accountTenant !== tenant.id ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT;
    }),
  );

  // Step-up: a session signed in with a weaker method than the client asks for (acr_values, or the
  // client's default_acr_values) must log in again; the interaction then asks only for the missing
  // factors (LoginFlowService.beginStepUp). Methods are ordered by METHOD_STRENGTH: otp < password <
  // password_otp < password_certificate < passkey < otp_passkey.
  policy.get('login')?.checks.add(
    new interactionPolicy.Check('acr_step_up', 'the session was established with a weaker login method than requested', (ctx) => {
      const session = ctx.oidc.session;
      if (!session?.accountId || ctx.oidc.result?.login) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      const required = requiredMethod(ctx.oidc.params?.acr_values as string | undefined);
      if (!required) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      const current = methodOfAcr(session.acr);
      return current && isAtLeast(current, required) ? interactionPolicy.Check.NO_NEED_TO_PROMPT : interactionPolicy.Check.REQUEST_PROMPT;
    }),
  );

  // A session whose account was locked, sent back to activation or deleted signs in nobody (findAccount
  // answers nothing for it): ask for a login instead of failing later in the request.
  policy.get('login')?.checks.add(
    new interactionPolicy.Check('account_unavailable', 'the signed-in account can no longer sign in', 'login_required', (ctx) =>
      ctx.oidc.session?.accountId && !ctx.oidc.account && !ctx.oidc.result?.login ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT,
    ),
  );

  // Introspection (RFC 7662) tells a token's details only to its own client, or to a resource server
  // of the same tenant (client config `resource_server`); anyone else learns `active: false`. Tokens
  // of accounts that can no longer sign in are inactive for everyone.
  const sameTenant = (a: string, b: string) => {
    const ta = tenants.client(a)?.tenant.id;
    return ta !== undefined && ta === tenants.client(b)?.tenant.id;
  };
  const introspectionAllowed: IntrospectionPolicy = async (_ctx, client, token) => {
    if (token.clientId !== client.clientId) {
      if (client.clientAuthMethod === 'none' || !token.clientId || !sameTenant(token.clientId, client.clientId)) return false;
      const caller = tenants.client(client.clientId)?.client;
      if (!caller || !isResourceServer(caller)) return false;
    }
    const accountId = 'accountId' in token ? token.accountId : undefined;
    if (!accountId) return true;
    const account = await accounts.findById(accountId);
    return !!account && isSignInAllowed(account);
  };

  const mtlsUrl = config.certificates.mtls.url;
  // Outgoing requests (back-channel logout) reach only public addresses, except the back-channel
  // logout URIs the integrator registered in config/: sites often listen on an internal network.
  const outboundFetch = createOutboundFetch({ trusted: tenants.allClients().flatMap(({ client }) => (client.backchannel_logout_uri ? [client.backchannel_logout_uri] : [])) });

  const configuration: Configuration = {
    adapter: createAdapterFactory(deps.payloads),
    fetch: outboundFetch,
    clients,
    jwks: deps.jwks as Configuration['jwks'],
    cookies: { keys: deps.cookieKeys, ...(acceptsHttpPost(config.issuer) ? { long: { httpOnly: true, sameSite: 'none' } } : {}) },
    enableHttpPostMethods: acceptsHttpPost(config.issuer),
    acrValues: ACR_VALUES,
    claims: {
      acr: null,
      amr: null,
      auth_time: null,
      sid: null,
      // Set by the library on every ID token; listed so claims_supported names all an ID token carries.
      iss: null,
      aud: null,
      exp: null,
      iat: null,
      nonce: null,
      // Every ID token says how and when the user signed in (RFC 8176 amr, the method's acr).
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      // Only what an account holds: no name (the user ID is not one), locale of its last login pages.
      profile: ['preferred_username', 'locale', 'updated_at'],
      email: ['email', 'email_verified'],
    },
    // management stays a scope (back offices' client_credentials) but is not advertised: see below.
    scopes: [...OIDC_SCOPES, MANAGEMENT_SCOPE],
    // The authorization code flow only: sites get tokens from the back channel, never the URL.
    responseTypes: ['code'],
    clientAuthMethods,
    enabledJWA: { idTokenSigningAlgValues: idTokenAlgs },
    clientDefaults: { id_token_signed_response_alg: idTokenAlgs[0] ?? 'RS256', grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'client_secret_basic' },
    // Relying sites read preferred_username and email straight from the ID token.
    conformIdTokenClaims: false,
    // OpenID Connect Core 3.1.2.1 requires redirect_uri even when a client registered only one.
    allowOmittingSingleRegisteredRedirectUri: false,
    // Public clients always need PKCE; confidential ones only when registered with require_pkce (a
    // code_challenge they do send is enforced either way). See clientSchema.require_pkce.
    pkce: {
      required: (_ctx, client) => client.clientAuthMethod === 'none' || tenants.client(client.clientId)?.client.require_pkce === true,
    },
    features: {
      devInteractions: { enabled: false },
      // Tenants' back offices call the management API with client_credentials tokens (opaque, stored).
      clientCredentials: { enabled: hasBackOffice },
      // Only a token's own client revokes it; another client gets the same 200 as for an unknown token,
      // so revocation can't be used to learn whether another site's token exists.
      revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      introspection: { enabled: true, allowedPolicy: introspectionAllowed },
      userinfo: { enabled: true },
      // Sites registered with backchannel_logout_uri hear about ended sessions (src/oidc/backchannel.ts
      // covers sessions the account area ends outside end_session).
      backchannelLogout: { enabled: true },
      // Lets the account area ask for the sid claim (claims={"id_token":{"sid":null}}) to know its session.
      claimsParameter: { enabled: true },
      // RFC 8705 certificate-bound access tokens for clients registered with
      // tls_client_certificate_bound_access_tokens; their token requests must come over mutual TLS.
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        getCertificate: (ctx) => deps.clientCertificate(ctx.req)?.pem,
      },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          const locale = localeOf(ctx);
          ctx.type = 'html';
          // Declining the account area's (or support console's) own logout goes back to the area with both sessions kept; the
          // library's decline (a form post without logout=yes) would still sign the user out of the client.
          const clientId = ctx.oidc.client?.clientId;
          const tenant = clientId ? tenants.client(clientId)?.tenant : undefined;
          const stayHref = tenant && clientId === accountConsoleClientId(tenant.id) ? '/account/' : tenant && clientId === supportConsoleClientId(tenant.id) ? '/console/' : undefined;
          ctx.body = renderPage('logout/confirm', { ...pageLocals(locale, ctx.method === 'GET' ? ctx.url : undefined), form, stayHref, pageTitle: undefined });
        },
        async postLogoutSuccessSource(ctx) {
          const locale = localeOf(ctx);
          ctx.type = 'html';
          ctx.body = renderPage('logout/done', { ...pageLocals(locale), clientName: ctx.oidc.client?.clientName });
        },
      },
    },
    discovery: {
      claim_types_supported: ['normal'],
      ui_locales_supported: [...LOCALES],
      // Clients using RFC 8705 find the mutual-TLS listener's endpoints here.
      ...(mtlsUrl
        ? {
            mtls_endpoint_aliases: {
              token_endpoint: `${mtlsUrl}/token`,
              userinfo_endpoint: `${mtlsUrl}/me`,
              introspection_endpoint: `${mtlsUrl}/token/introspection`,
              revocation_endpoint: `${mtlsUrl}/token/revocation`,
            },
          }
        : {}),
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
    async findAccount(ctx, sub) {
      // The redirect and the code exchange right after a login use the account the login left.
      const justLoggedIn = ctx.oidc?.route === 'resume' || (ctx.oidc?.route === 'token' && ctx.oidc.params?.grant_type === 'authorization_code');
      const account = (justLoggedIn ? deps.loginHandoff?.take(sub) : undefined) ?? (await accounts.findById(sub).catch((e: unknown) => Promise.reject(oidcUnavailable(e))));
      // Refresh, userinfo and silent sign-in stop for accounts that can't sign in (docs/failure-modes.md, lifecycle).
      if (!account || !isSignInAllowed(account)) return undefined;
      return {
        accountId: account.id,
        async claims() {
          const email = account.devices.find((d) => d.verifiedAt)?.email;
          return {
            sub: account.id,
            preferred_username: account.userId,
            ...(account.locale ? { locale: account.locale } : {}),
            // Moves with every login and every device change that can change the e-mail (DeviceRepository).
            updated_at: Math.floor(account.updatedAt.getTime() / 1000),
            ...(email ? { email, email_verified: true } : {}),
          };
        },
      };
    },
    // Every oidc-provider error page (authorization, end-session, any endpoint a browser reaches).
    async renderError(ctx, out) {
      renderOidcError(ctx, out, localeOf(ctx), { scopes: OIDC_SCOPES });
    },
  };

  const provider = new Provider(config.issuer, configuration);
  provider.proxy = config.trustProxy;
  // The same keys, checked without Keygrip's per-check random HMAC key; the app shares this signer.
  provider.keys = new CookieSigner(deps.cookieKeys);
  provider.use(async (ctx, next) => {
    await next();
    // A 503 (temporarily_unavailable: a database outage, adapter.ts) says when to try again, as JSON or page.
    if (ctx.status === 503 && !ctx.response.get('Retry-After')) ctx.set('Retry-After', String(DATABASE_RETRY_AFTER_SECONDS));
    // oidc-provider's discovery override only fills absent fields, so two corrections are made here:
    // management is for back offices only (it still works for them), and certificate-bound tokens are
    // advertised only when a client is registered for them and certificates can reach the provider.
    if (ctx.oidc?.route !== 'discovery' || !ctx.body || typeof ctx.body !== 'object') return;
    const body = ctx.body as Record<string, unknown>;
    body.scopes_supported = (body.scopes_supported as string[]).filter((s) => s !== MANAGEMENT_SCOPE);
    if (!certificateBinding) delete body.tls_client_certificate_bound_access_tokens;
  });
  return provider;
}
