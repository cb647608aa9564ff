import Router from '@koa/router';
import { emailAddressSchema } from '../mail/email-address.js';
import type { Context, Next } from 'koa';
import { z } from 'zod';
import type { AccountService } from '../account/account.service.js';
import { toView } from '../account/account.service.js';
import type { IssuedActivation } from '../activation/activation.service.js';
import type { TenantDirectory } from '../config/index.js';
import { LOGIN_METHODS } from '../config/tenants.js';
import { clientIp } from '../http/client-ip.js';
import { LOCALES } from '../i18n/index.js';
import { MANAGEMENT_SCOPE, type VerifiedAccessToken } from '../oidc/access-tokens.js';
import type { LoginEvent } from '../persistence/login-event.repository.js';
import { ACCOUNT_ROLES, type AccountRole } from '../persistence/account.repository.js';
import { openApiDocument } from './openapi.js';
import type { AuditAction, AuditService, StaffActor } from '../audit/audit.service.js';
import { AppError } from '../http/errors.js';
import type { WebhookService } from '../webhooks/webhook.service.js';
import { requestIdOf } from '../http/request-id.js';
import { auditRoutes } from './audit.routes.js';
import { webhookRoutes } from './webhook.routes.js';
import { API_PREFIX, BearerTokenError, RequestValidationError, UnsupportedMediaTypeError, fieldProblems } from './problem.js';

/** Verifies a bearer token (ClientCredentialsTokens in src/oidc/access-tokens.ts). */
export interface AccessTokenVerifier {
  verify(token: string): Promise<VerifiedAccessToken | undefined>;
}

interface Caller {
  tenantId: string;
  clientId: string;
}

const DEVICE_KIND = z.enum(['pc', 'mobile', 'smartphone']);
const device = z.strictObject({ email: emailAddressSchema, kind: DEVICE_KIND.optional() });
const devices = z.array(device).min(1).max(50);
const locale = z.enum(LOCALES);

const createBody = z.strictObject({
  userId: z.string().min(1).max(64),
  devices,
  loginMethod: z.enum(LOGIN_METHODS).optional(),
  sendActivation: z.boolean().optional(),
  locale: locale.optional(),
});
const patchBody = z
  .strictObject({
    loginMethod: z.enum(LOGIN_METHODS).optional(),
    role: z.enum(ACCOUNT_ROLES as [AccountRole, ...AccountRole[]]).nullable().optional(),
    devices: devices.optional(),
    sendActivation: z.boolean().optional(),
    locale: locale.optional(),
  })
  .refine((b) => b.loginMethod !== undefined || b.role !== undefined || b.devices !== undefined, { params: { messageKey: 'management:fields.empty_patch' } });
const activationBody = z.strictObject({ send: z.boolean().optional(), locale: locale.optional() });
const unlockBody = z.strictObject({ locale: locale.optional() });

const paging = {
  page: z.coerce.number().int().min(1).max(1_000_000).default(1),
  per_page: z.coerce.number().int().min(1).max(100).default(20),
};
const listQuery = z.object({ status: z.enum(['pending_activation', 'active', 'locked']).optional(), ...paging });
const pageQuery = z.object(paging);

function parse<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const result = schema.safeParse(input);
  if (!result.success) throw new RequestValidationError(fieldProblems(result.error, input));
  return result.data;
}

/** The JSON body; a body of another type is a 415, no body at all counts as `{}`. */
function jsonBody(ctx: Context): unknown {
  // `Content-Length: 0` counts as a body for type-is; for us it is none (fetch sends it on a bare POST).
  const hasBody = Number(ctx.get('content-length') || 0) > 0 || ctx.get('transfer-encoding') !== '';
  if (hasBody && !ctx.request.is('application/json')) throw new UnsupportedMediaTypeError();
  return (ctx.request as { body?: unknown }).body ?? {};
}

const accountPath = (userId: string) => `${API_PREFIX}/accounts/${encodeURIComponent(userId)}`;

function pageLink(path: string, query: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
  return `${path}?${q.toString()}`;
}

function activationView(a: IssuedActivation, mailed: boolean) {
  // A mailed code goes to the user only: the back office never sees it.
  return { url: a.url, ...(mailed ? {} : { otp: a.otp }), expiresAt: a.expiresAt.toISOString(), mailed };
}

function eventView(e: LoginEvent) {
  return { id: e.id, createdAt: e.createdAt.toISOString(), result: e.result, method: e.method, clientId: e.clientId, sourceIp: e.sourceIp, userAgent: e.userAgent };
}

/**
 * The management API for a tenant's back office (`/api/v1`): the bearer token's client decides the
 * tenant, so a token never reaches another tenant's accounts (they are simply not found). Errors
 * are problem+json, rendered by `renderProblem` through the error handler.
 */
export function managementRouter(deps: { accounts: AccountService; tokens: AccessTokenVerifier; tenants: TenantDirectory; issuer: string; audit?: AuditService; webhooks?: WebhookService }): Router {
  const { accounts, tokens, tenants } = deps;
  const router = new Router({ prefix: API_PREFIX });
  const document = openApiDocument(deps.issuer);

  async function authenticate(ctx: Context, next: Next) {
    const header = ctx.get('authorization');
    const match = /^Bearer +([^ ]+) *$/i.exec(header);
    if (!match) throw new BearerTokenError(header ? 'token_invalid' : 'token_missing', MANAGEMENT_SCOPE);
    const token = await tokens.verify(match[1]!);
    if (!token) throw new BearerTokenError('token_invalid', MANAGEMENT_SCOPE);
    if (token.expired) throw new BearerTokenError('token_expired', MANAGEMENT_SCOPE);
    const registered = tenants.client(token.clientId);
    // A client removed from config, or no longer allowed the grant, loses its tokens at once.
    if (!registered?.client.extra_grant_types.includes('client_credentials')) throw new BearerTokenError('token_invalid', MANAGEMENT_SCOPE);
    if (!token.scopes.includes(MANAGEMENT_SCOPE)) throw new BearerTokenError('insufficient_scope', MANAGEMENT_SCOPE);
    ctx.state.caller = { tenantId: registered.tenant.id, clientId: token.clientId } satisfies Caller;
    return next();
  }

  const caller = (ctx: Context): Caller => ctx.state.caller as Caller;
  // The account event's actor, and for the audit trail the calling client and the request.
  const actor = (ctx: Context) => {
    const staff: StaffActor = { kind: 'api', id: caller(ctx).clientId, ip: clientIp(ctx), requestId: requestIdOf(ctx) ?? null };
    return { actor: 'api' as const, ip: staff.ip, staff };
  };
  const userIdOf = (ctx: Context): string => ctx.params.userId ?? '';

  /**
   * Records a staff change the API turned down (a 4xx: validation error, not found, conflict) with
   * its error code, so the trail shows attempts too. Runs after `authenticate`: a request without a
   * valid token names no tenant and no actor, and is not recorded.
   */
  const audited = (action: AuditAction) => async (ctx: Context, next: Next) => {
    try {
      await next();
    } catch (e) {
      if (deps.audit && e instanceof AppError && e.status >= 400 && e.status < 500) {
        const body = (ctx.request as { body?: unknown }).body as { userId?: unknown } | undefined;
        const named = ctx.params.userId ?? (typeof body?.userId === 'string' ? body.userId : undefined);
        const userId = named !== undefined && named.length <= 64 && !named.includes('\0') ? named : null;
        await deps.audit.recordRefusal({ tenantId: caller(ctx).tenantId, who: actor(ctx).staff, action, userId, errorCode: e.code });
      }
      throw e;
    }
  };

  router.get('/openapi.json', (ctx) => {
    ctx.body = document;
  });

  router.post('/accounts', authenticate, audited('account.created'), async (ctx) => {
    const body = parse(createBody, jsonBody(ctx));
    const mailed = body.sendActivation === true;
    const { account, activation } = await accounts.create(
      caller(ctx).tenantId,
      { userId: body.userId, devices: body.devices, loginMethod: body.loginMethod, mailActivation: mailed, locale: body.locale },
      actor(ctx),
    );
    ctx.status = 201;
    ctx.set('Location', accountPath(account.userId));
    ctx.body = { ...toView(account), activation: activationView(activation, mailed) };
  });

  router.get('/accounts', authenticate, async (ctx) => {
    const q = parse(listQuery, ctx.query);
    const { items, total } = await accounts.list(caller(ctx).tenantId, { status: q.status, page: q.page, perPage: q.per_page });
    const last = Math.max(1, Math.ceil(total / q.per_page));
    const link = (page: number) => pageLink(`${API_PREFIX}/accounts`, { status: q.status, page, per_page: q.per_page });
    ctx.body = {
      items: items.map(toView),
      page: q.page,
      perPage: q.per_page,
      total,
      links: {
        self: link(q.page),
        first: link(1),
        last: link(last),
        ...(q.page > 1 ? { prev: link(Math.min(q.page - 1, last)) } : {}),
        ...(q.page < last ? { next: link(q.page + 1) } : {}),
      },
    };
  });

  router.get('/accounts/:userId', authenticate, async (ctx) => {
    ctx.body = toView(await accounts.find(caller(ctx).tenantId, userIdOf(ctx)));
  });

  router.patch('/accounts/:userId', authenticate, audited('account.updated'), async (ctx) => {
    const body = parse(patchBody, jsonBody(ctx));
    const mailed = body.sendActivation === true;
    const { sendActivation: _send, ...change } = body;
    const updated = await accounts.update(caller(ctx).tenantId, userIdOf(ctx), { ...change, mailActivation: mailed }, actor(ctx));
    // A method the account has no credentials for sends it through activation again (see the OpenAPI document).
    ctx.body = { ...toView(updated), ...(updated.activation ? { activation: activationView(updated.activation, mailed) } : {}) };
  });

  router.delete('/accounts/:userId', authenticate, audited('account.deleted'), async (ctx) => {
    await accounts.delete(caller(ctx).tenantId, userIdOf(ctx), actor(ctx));
    ctx.status = 204;
  });

  router.post('/accounts/:userId/activation', authenticate, audited('account.activation_issued'), async (ctx) => {
    const body = parse(activationBody, jsonBody(ctx));
    const mailed = body.send === true;
    const activation = await accounts.issueActivation(caller(ctx).tenantId, userIdOf(ctx), { ...actor(ctx), mail: mailed, locale: body.locale });
    ctx.body = activationView(activation, mailed);
  });

  router.post('/accounts/:userId/unlock', authenticate, audited('account.unlocked'), async (ctx) => {
    const body = parse(unlockBody, jsonBody(ctx));
    ctx.body = toView(await accounts.unlock(caller(ctx).tenantId, userIdOf(ctx), { ...actor(ctx), locale: body.locale }));
  });

  router.get('/accounts/:userId/login-events', authenticate, async (ctx) => {
    const q = parse(pageQuery, ctx.query);
    const userId = userIdOf(ctx);
    const { items } = await accounts.loginEvents(caller(ctx).tenantId, userId, { page: q.page, perPage: q.per_page });
    const link = (page: number) => pageLink(`${accountPath(userId)}/login-events`, { page, per_page: q.per_page });
    ctx.body = {
      items: items.map(eventView),
      page: q.page,
      perPage: q.per_page,
      links: {
        self: link(q.page),
        first: link(1),
        ...(q.page > 1 ? { prev: link(q.page - 1) } : {}),
        // No total here: a full page means there may be more.
        ...(items.length === q.per_page ? { next: link(q.page + 1) } : {}),
      },
    };
  });

  if (deps.audit) auditRoutes(router, { audit: deps.audit, authenticate, tenantOf: (ctx) => caller(ctx).tenantId, parse });
  if (deps.webhooks) webhookRoutes(router, { webhooks: deps.webhooks, authenticate, caller, staff: (ctx) => actor(ctx).staff, audited, parse, jsonBody });

  return router;
}
