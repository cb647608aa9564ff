import type { Context } from 'koa';
import { errors } from 'oidc-provider';
import { SessionExpiredError } from '../http/errors.js';
import type { Provider } from './provider.js';

export interface InteractionDetails {
  uid: string;
  prompt: { name: string; reasons: string[]; details: Record<string, unknown> };
  params: { client_id: string; ui_locales?: string; login_hint?: string; acr_values?: string; scope?: string } & Record<string, unknown>;
  session?: { accountId?: string; acr?: string; amr?: string[] };
  grantId?: string;
}

export interface LoginResult {
  accountId: string;
  acr: string;
  amr: string[];
}

/**
 * The interaction side of oidc-provider, as the interaction router sees it. Unknown, expired or
 * foreign interactions become SessionExpiredError (a clear 400 page, never a 500).
 */
export class OidcInteractions {
  constructor(private readonly provider: Provider) {}

  async details(ctx: Context): Promise<InteractionDetails> {
    try {
      const d = await this.provider.interactionDetails(ctx.req, ctx.res);
      return d as unknown as InteractionDetails;
    } catch (e) {
      if (e instanceof errors.SessionNotFound || e instanceof errors.InvalidRequest) throw new SessionExpiredError();
      throw e;
    }
  }

  private async finish(ctx: Context, result: Record<string, unknown>): Promise<void> {
    let redirectTo: string;
    try {
      redirectTo = await this.provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
    } catch (e) {
      if (e instanceof errors.SessionNotFound) throw new SessionExpiredError();
      throw e;
    }
    ctx.status = 303;
    ctx.redirect(redirectTo);
  }

  finishLogin(ctx: Context, login: LoginResult): Promise<void> {
    return this.finish(ctx, { login: { accountId: login.accountId, acr: login.acr, amr: login.amr, remember: true } });
  }

  /** Grants what the consent prompt found missing and finishes the consent step. */
  async finishConsent(ctx: Context, details: InteractionDetails): Promise<void> {
    const accountId = details.session?.accountId;
    if (!accountId) throw new SessionExpiredError();
    const grant = details.grantId
      ? await this.provider.Grant.find(details.grantId)
      : new this.provider.Grant({ accountId, clientId: details.params.client_id });
    if (!grant) throw new SessionExpiredError();
    const missing = details.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
    const grantId = await grant.save();
    await this.finish(ctx, { consent: details.grantId ? {} : { grantId } });
  }

  abort(ctx: Context): Promise<void> {
    return this.finish(ctx, { error: 'access_denied', error_description: 'End-User aborted interaction' });
  }

  /** Client display name, for pages. */
  async clientName(clientId: string): Promise<string | undefined> {
    const client = await this.provider.Client.find(clientId);
    return client?.clientName ?? undefined;
  }
}
