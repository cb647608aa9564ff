import type { Context } from 'koa';
import * as oidc from 'openid-client';
import type { SessionRepository } from '../persistence/session.repository.js';
import type { AppError } from './errors.js';

/** What a sign-in keeps between its redirect to the provider and the callback (a signed cookie). */
export interface PendingSignIn {
  verifier: string;
  state: string;
  nonce: string;
  tenant: string;
  returnTo: string;
  /** The relying site's client_id the user came from (the account area's way back). */
  from?: string;
}

export interface FinishedSignIn {
  pending: PendingSignIn;
  tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
  claims: oidc.IDToken;
  /** The provider session behind the ID token (its sid), by its stable uid. */
  providerSession: { uid: string };
  sid: string;
}

/**
 * The sign-in of this provider's own first-party clients (the account area, the support console):
 * each is an OIDC client of the provider, one per tenant, talking to it over HTTP with openid-client
 * like any relying site, with PKCE and a pending-sign-in cookie on its own path. The ID token must name
 * the provider session (sid), so the client's own session can end with it.
 */
export function firstPartySignIn(opts: {
  issuer: string;
  /** The client's path prefix (`/account`, `/console`): its callback is `<path>/callback`, its cookies live there. */
  path: string;
  clientIdOf: (tenantId: string) => string;
  pendingCookie: string;
  secure: boolean;
  sessions: Pick<SessionRepository, 'findBySid'>;
  /** The errors of a sign-in that cannot finish (no pending sign-in, a refused code) and of a provider that answered with an error. */
  errors: { noSignIn: () => AppError; signInFailed: () => AppError };
}) {
  const discovered = new Map<string, Promise<oidc.Configuration>>();
  const execute = opts.issuer.startsWith('http:') ? [oidc.allowInsecureRequests] : [];

  /** The provider's configuration for a tenant's client, discovered once (again after a failure). */
  const configuration = (tenantId: string): Promise<oidc.Configuration> => {
    const clientId = opts.clientIdOf(tenantId);
    let found = discovered.get(clientId);
    if (!found) {
      found = oidc.discovery(new URL(opts.issuer), clientId, undefined, oidc.None(), { execute }).catch((e: unknown) => {
        discovered.delete(clientId);
        throw e;
      });
      discovered.set(clientId, found);
    }
    return found;
  };

  const readPending = (ctx: Context): PendingSignIn | undefined => {
    try {
      const raw = ctx.cookies.get(opts.pendingCookie, { signed: true });
      return raw ? (JSON.parse(Buffer.from(raw, 'base64url').toString()) as PendingSignIn) : undefined;
    } catch {
      return undefined;
    }
  };
  const writePending = (ctx: Context, p: PendingSignIn | undefined) =>
    ctx.cookies.set(opts.pendingCookie, p ? Buffer.from(JSON.stringify(p)).toString('base64url') : null, {
      signed: true,
      httpOnly: true,
      // Lax: it must come along on the redirect chain back to the callback.
      sameSite: 'lax',
      path: opts.path,
      maxAge: 30 * 60 * 1000,
      secure: opts.secure && ctx.secure,
      overwrite: true,
    });

  return {
    configuration,

    /** Redirects to the provider's authorization endpoint; `params`: the client's own (scope, acr_values, max_age…). */
    async start(ctx: Context, who: { tenant: string; returnTo: string; from?: string }, params: Record<string, string>): Promise<void> {
      const cfg = await configuration(who.tenant);
      const verifier = oidc.randomPKCECodeVerifier();
      const pending: PendingSignIn = { verifier, state: oidc.randomState(), nonce: oidc.randomNonce(), ...who };
      writePending(ctx, pending);
      const url = oidc.buildAuthorizationUrl(cfg, {
        redirect_uri: `${opts.issuer}${opts.path}/callback`,
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state: pending.state,
        nonce: pending.nonce,
        ui_locales: ctx.state.locale,
        // The sid claim names the provider session behind the client's own.
        claims: JSON.stringify({ id_token: { sid: null } }),
        ...params,
      });
      ctx.status = 303;
      ctx.redirect(url.href);
    },

    /** The callback: exchanges the code (the pending sign-in is spent either way) and finds the provider session. */
    async finish(ctx: Context): Promise<FinishedSignIn> {
      const pending = readPending(ctx);
      writePending(ctx, undefined);
      if (!pending) throw opts.errors.noSignIn();
      const cfg = await configuration(pending.tenant);
      const current = new URL(ctx.originalUrl, opts.issuer);
      if (current.searchParams.get('error')) throw opts.errors.signInFailed();
      let tokens: FinishedSignIn['tokens'];
      try {
        tokens = await oidc.authorizationCodeGrant(cfg, current, { pkceCodeVerifier: pending.verifier, expectedState: pending.state, expectedNonce: pending.nonce });
      } catch {
        throw opts.errors.noSignIn();
      }
      const claims = tokens.claims()!;
      // The session's uid, unlike sid, is indexed: every request of the client checks that the session still exists.
      const sid = typeof claims.sid === 'string' ? claims.sid : undefined;
      const providerSession = sid ? await opts.sessions.findBySid(claims.sub, opts.clientIdOf(pending.tenant), sid) : undefined;
      if (!sid || !providerSession) throw opts.errors.noSignIn();
      return { pending, tokens, claims, providerSession, sid };
    },

    /** The provider's end-session URL for an ID token, coming back to `<path>/logged-out`. */
    async endSessionUrl(ctx: Context, tenantId: string, idToken: string): Promise<string> {
      const cfg = await configuration(tenantId);
      return oidc.buildEndSessionUrl(cfg, { id_token_hint: idToken, post_logout_redirect_uri: `${opts.issuer}${opts.path}/logged-out`, ui_locales: ctx.state.locale }).href;
    },
  };
}
