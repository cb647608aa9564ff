import type { Context } from 'koa';
import type { PresentedCertificate } from '../http/client-certificate.js';
import { clientIp } from '../http/client-ip.js';
import { SessionExpiredError } from '../http/errors.js';
import { setLocale } from '../http/locale.js';
import { isLocale, negotiateLocale } from '../i18n/index.js';
import type { RequestInfo } from '../login/login-flow.service.js';
import type { InteractionDetails, OidcInteractions } from '../oidc/interactions.js';
import type { LoginContextData, LoginContextRepository } from '../persistence/login-context.repository.js';
import type { OidcPayloadRepository } from '../persistence/oidc-payload.repository.js';

const UID = /^[A-Za-z0-9_-]{10,64}$/;

/**
 * Loads the interaction named in the path (checking its cookie, which oidc-provider scopes to
 * /interaction/:uid) and settles the page language, the OIDC request's ui_locales included.
 */
export async function loadInteraction(ctx: Context, interactions: OidcInteractions): Promise<InteractionDetails> {
  const uid = ctx.params.uid ?? '';
  if (!UID.test(uid)) throw new SessionExpiredError();
  const details = await interactions.details(ctx);
  if (details.uid !== uid) throw new SessionExpiredError();
  const fromQuery = typeof ctx.query.lang === 'string' && isLocale(ctx.query.lang) ? ctx.query.lang : undefined;
  setLocale(ctx, negotiateLocale([fromQuery, ctx.cookies.get('lang'), details.params.ui_locales], ctx.get('accept-language')));
  return details;
}

/**
 * A login step: loads the interaction together with its login flow, account and newest code in one
 * statement, then runs `handle` with oidc-provider's own reads of that interaction (its details, and
 * finishing it) answered from what was loaded.
 */
export async function withLoginStep<T>(
  ctx: Context,
  deps: { interactions: OidcInteractions; contexts: LoginContextRepository; payloads: OidcPayloadRepository },
  handle: (step: { details: InteractionDetails; loaded: LoginContextData }) => Promise<T>,
  submittedUserId?: string,
): Promise<T> {
  const uid = ctx.params.uid ?? '';
  if (!UID.test(uid)) throw new SessionExpiredError();
  const loaded = await deps.contexts.load(uid, submittedUserId);
  return deps.payloads.withPrefetched('Interaction', { [uid]: loaded.interaction }, async () => handle({ details: await loadInteraction(ctx, deps.interactions), loaded }));
}

export const requestInfo = (ctx: Context): RequestInfo => ({
  ip: clientIp(ctx),
  userAgent: ctx.get('user-agent') || null,
  locale: ctx.state.locale,
  // Set by the app's client-certificate middleware (mutual-TLS listener or trusted proxy).
  ...(ctx.state.clientCertificate ? { clientCertificate: ctx.state.clientCertificate as PresentedCertificate } : {}),
});

export function formBody(ctx: Context): Record<string, unknown> {
  const b = (ctx.request as { body?: unknown }).body;
  return b && typeof b === 'object' && !Array.isArray(b) ? (b as Record<string, unknown>) : {};
}
