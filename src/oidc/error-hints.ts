import type { KoaContextWithOIDC } from 'oidc-provider';
import { pageLocals, renderPage } from '../http/pages.js';
import type { Locale } from '../i18n/index.js';

/** What oidc-provider hands to renderError: the OAuth error and its English description. */
export interface OidcErrorOut {
  error: string;
  error_description?: string;
  /** invalid_scope names the scopes it refused here. */
  scope?: string;
}

/** The request values a hint may quote back to the integrator (only strings the request carried). */
export interface OidcErrorRequest {
  clientId?: string;
  redirectUri?: string;
  postLogoutRedirectUri?: string;
  /** The error arose in RP-initiated logout, so the end user is told about a logout request. */
  logout?: boolean;
}

/** What the error page shows: a message for the end user, the code, and a translated hint for the developer. */
export interface OidcErrorView {
  error: string;
  messageKey: string;
  hintKey: string;
  hintParams: Record<string, string>;
  /** oidc-provider's own description, quoted in the developer block so nothing is lost. */
  original?: string;
}

type Params = (m: RegExpExecArray, out: OidcErrorOut, req: OidcErrorRequest) => Record<string, string>;

interface HintRule {
  /** The OAuth error code(s) the rule applies to; any when absent. */
  error?: readonly string[];
  /** Matched against error_description; any when absent. */
  description?: RegExp;
  hint: string;
  message?: string;
  params?: Params;
}

const MSG = {
  request: 'oidc:messages.request',
  logout: 'oidc:messages.logout',
  expired: 'common:errors.session_expired',
  csrf: 'common:errors.csrf',
  denied: 'oidc:messages.access_denied',
  login: 'oidc:messages.login_required',
  server: 'common:errors.internal',
  unavailable: 'common:errors.unavailable',
} as const;

/** Scopes and values this provider supports, quoted in hints so the developer needn't look them up. */
export interface SupportedValues {
  scopes: readonly string[];
}

/** Longer values are cut for display: the page needs to show which value was sent, not all of it. */
function shown(value: string | undefined): string {
  if (!value) return '';
  return value.length > 200 ? `${value.slice(0, 200)}…` : value;
}

/** Formats oidc-provider's quoted parameter list ("'a' and 'b'") as "a, b". */
const paramList: Params = (m) => ({ params: (m[1] ?? '').replace(/'/g, '').replace(/,? and /g, ', ') });

/**
 * (error, description) → hint, first match wins. The descriptions are oidc-provider 9's; a wording
 * change there only sends a case to the generic hint, which still quotes the original.
 */
function rules(supported: SupportedValues): HintRule[] {
  return [
    { description: /^missing required parameter 'client_id'$/, hint: 'oidc:hints.client_id_missing' },
    { error: ['invalid_client'], description: /^client is invalid$/, hint: 'oidc:hints.client_unknown', params: (_m, _o, r) => ({ clientId: shown(r.clientId) }) },
    {
      error: ['invalid_redirect_uri'],
      hint: 'oidc:hints.redirect_uri_unregistered',
      params: (_m, _o, r) => ({ redirectUri: shown(r.redirectUri), clientId: shown(r.clientId) }),
    },
    { description: /^missing required parameter 'redirect_uri'$/, hint: 'oidc:hints.redirect_uri_missing', params: (_m, _o, r) => ({ clientId: shown(r.clientId) }) },
    { description: /^missing required parameter 'response_type'$/, hint: 'oidc:hints.response_type_missing' },
    { error: ['unsupported_response_type'], hint: 'oidc:hints.response_type_unsupported' },
    { description: /^requested response_type is not allowed for this client$/, hint: 'oidc:hints.response_type_unsupported' },
    { description: /^Authorization Server policy requires PKCE/, hint: 'oidc:hints.pkce_required', params: (_m, _o, r) => ({ clientId: shown(r.clientId) }) },
    { description: /code_challenge_method/, hint: 'oidc:hints.pkce_method' },
    { description: /^code_challenge must be a string/, hint: 'oidc:hints.pkce_challenge' },
    { error: ['invalid_scope'], hint: 'oidc:hints.scope_invalid', params: (_m, o) => ({ scope: shown(o.scope), supported: supported.scopes.join(' ') }) },
    { description: /^openid scope must be requested/, hint: 'oidc:hints.scope_openid' },
    { description: /^unsupported prompt value requested$/, hint: 'oidc:hints.prompt_unsupported' },
    { description: /^prompt none must only be used alone$/, hint: 'oidc:hints.prompt_none_alone' },
    { description: /^invalid max_age parameter value$/, hint: 'oidc:hints.max_age' },
    { description: /claims parameter|^claims\./, hint: 'oidc:hints.claims' },
    { description: /^(.+) parameters? must not be provided twice$/, hint: 'oidc:hints.duplicate', params: paramList },
    { description: /^missing required parameters? (.+)$/, hint: 'oidc:hints.missing', params: paramList },
    { error: ['unsupported_response_mode'], hint: 'oidc:hints.response_mode' },
    { description: /^requested response_mode is not allowed/, hint: 'oidc:hints.response_mode' },
    { error: ['request_not_supported', 'request_uri_not_supported', 'invalid_request_object', 'invalid_request_uri'], hint: 'oidc:hints.request_object' },
    { error: ['invalid_target'], hint: 'oidc:hints.resource' },
    { description: /^post_logout_redirect_uri not registered$/, hint: 'oidc:hints.post_logout_unregistered', params: (_m, _o, r) => ({ uri: shown(r.postLogoutRedirectUri), clientId: shown(r.clientId) }) },
    { description: /id_token_hint/, hint: 'oidc:hints.id_token_hint' },
    { description: /^(xsrf token invalid|could not find logout details)$/, message: MSG.csrf, hint: 'oidc:hints.xsrf' },
    { description: /^(interaction session id cookie not found|interaction session not found|session not found|session principal changed|authorization request has expired)$/, message: MSG.expired, hint: 'oidc:hints.session_not_found' },
    { error: ['access_denied'], message: MSG.denied, hint: 'oidc:hints.access_denied' },
    { error: ['login_required', 'interaction_required', 'consent_required', 'account_selection_required'], message: MSG.login, hint: 'oidc:hints.prompt_none' },
    { error: ['server_error'], message: MSG.server, hint: 'oidc:hints.server_error' },
    { error: ['temporarily_unavailable'], message: MSG.unavailable, hint: 'oidc:hints.temporarily_unavailable' },
  ];
}

/** Picks the page's message and hint for an oidc-provider error. */
export function describeOidcError(out: OidcErrorOut, req: OidcErrorRequest, supported: SupportedValues): OidcErrorView {
  const description = out.error_description ?? '';
  const requestMessage = req.logout ? MSG.logout : MSG.request;
  for (const rule of rules(supported)) {
    if (rule.error && !rule.error.includes(out.error)) continue;
    const m = (rule.description ?? /^/).exec(description);
    if (!m) continue;
    return { error: out.error, messageKey: rule.message ?? requestMessage, hintKey: rule.hint, hintParams: rule.params?.(m, out, req) ?? {}, original: out.error_description };
  }
  return { error: out.error, messageKey: requestMessage, hintKey: 'oidc:hints.generic', hintParams: { error: out.error }, original: out.error_description };
}

function stringParam(value: unknown): string | undefined {
  return typeof value === 'string' && value ? value : undefined;
}

/** The values the hint may quote, from the parsed parameters or, before parsing, the raw request. */
export function requestOf(ctx: KoaContextWithOIDC): OidcErrorRequest {
  const raw = (ctx.oidc?.params ?? (ctx.method === 'POST' ? ctx.oidc?.body : undefined) ?? ctx.query) as Record<string, unknown>;
  return {
    clientId: stringParam(raw.client_id) ?? ctx.oidc?.client?.clientId,
    redirectUri: stringParam(raw.redirect_uri),
    postLogoutRedirectUri: stringParam(raw.post_logout_redirect_uri),
    logout: ctx.oidc?.route?.startsWith('end_session') ?? false,
  };
}

/** oidc-provider's renderError: our page, in the user's language, with a hint for the site's developer. */
export function renderOidcError(ctx: KoaContextWithOIDC, out: OidcErrorOut, locale: Locale, supported: SupportedValues): void {
  const view = describeOidcError(out, requestOf(ctx), supported);
  ctx.type = 'html';
  ctx.body = renderPage('oidc-error', { ...pageLocals(locale), ...view, pageTitle: undefined, requestId: ctx.state?.requestId });
}
