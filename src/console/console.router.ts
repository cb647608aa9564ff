import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import { supportConsoleClientId, type AppConfig, type TenantDirectory } from '../config/index.js';
import { AppError, BadRequestError, ForbiddenError } from '../http/errors.js';
import { firstPartySignIn } from '../http/first-party-sign-in.js';
import { METHOD_ACR, METHOD_STRENGTH, isAtLeast, methodOfAcr } from '../login/login-methods.js';
import type { AccountRepository } from '../persistence/account.repository.js';
import type { SessionRepository } from '../persistence/session.repository.js';
import type { LoginMethod } from '../config/index.js';
import { isStaff, readConsoleSession, requireStaff, safeConsoleReturn, staffOf, writeConsoleSession } from './console-session.js';
import type { SupportConsoleService } from './support-console.service.js';
import { ACTIONS_OF } from './console-roles.js';

/** The notices an action's redirect may ask the account page to show (console:done.*). */
const DONE_NOTICES = ['unlocked', 'activation_mailed', 'sessions_ended', 'certificate_revoked', 'method_changed', 'method_changed_activation'];

const PENDING = 'support_console_login';

/** The weakest login method staff may sign in with: password and the mailed code, or anything stronger. */
export const CONSOLE_MIN_METHOD: LoginMethod = 'password_otp';
/** acr_values of the console's authorization requests: the minimum and every stronger method. */
export const CONSOLE_ACR_VALUES = METHOD_STRENGTH.filter((m) => isAtLeast(m, CONSOLE_MIN_METHOD)).map((m) => METHOD_ACR[m]);


// The search form's fields; a user-ID prefix holds user-ID characters only, so no LIKE wildcard reaches SQL.
const searchQuery = z.object({
  user_id: z
    .string()
    .trim()
    .max(64)
    .regex(/^[A-Za-z0-9._@-]*$/)
    .optional()
    .catch(undefined),
  email: z.string().trim().max(254).optional().catch(undefined),
  status: z.enum(['pending_activation', 'active', 'locked']).optional().catch(undefined),
  page: z.coerce.number().int().min(1).max(1_000_000).catch(1).default(1),
});

/** `2026-11-30 12:34:56 UTC`: times on console pages are UTC, said so. */
export function consoleTime(d: Date | null | undefined): string {
  return d ? `${d.toISOString().replace('T', ' ').slice(0, 19)} UTC` : '-';
}

/**
 * The support console (/console/): the tenant's support staff (accounts with the role `support` or
 * `admin`) sign in through this provider as its client `support-console-<tenant>`, with password and
 * the mailed code or a stronger method, and look up and help the tenant's accounts. This router holds
 * the sign-in, the search and the account page; `consoleActionsRouter` the changes.
 */
export function consoleRouter(deps: {
  config: AppConfig;
  tenants: TenantDirectory;
  accounts: AccountRepository;
  sessions: SessionRepository;
  console: SupportConsoleService;
  secure: boolean;
}) {
  const { config, tenants } = deps;
  const router = new Router({ prefix: '/console' });
  const staffOnly = requireStaff({ accounts: deps.accounts, tenants, sessions: deps.sessions, secure: deps.secure });

  const signIn = firstPartySignIn({
    issuer: config.issuer,
    path: '/console',
    clientIdOf: supportConsoleClientId,
    pendingCookie: PENDING,
    secure: deps.secure,
    sessions: deps.sessions,
    errors: {
      noSignIn: () => new BadRequestError('console:errors.no_sign_in', {}, '/console/'),
      signInFailed: () => new AppError('sign_in_failed', 401, 'console:errors.sign_in_failed', {}, '/console/'),
    },
  });

  // Sign-in: /console/login?tenant=<tenant id>; without one, a small page asks for it.
  router.get('/login', async (ctx) => {
    const tenantId = typeof ctx.query.tenant === 'string' ? ctx.query.tenant.trim() : '';
    const returnTo = safeConsoleReturn(ctx.query.return);
    if (!tenantId) {
      await ctx.render('console/login', { returnTo, unknownTenant: false });
      return;
    }
    const tenant = tenants.tenant(tenantId);
    if (!tenant) {
      ctx.status = 404;
      await ctx.render('console/login', { returnTo, unknownTenant: true, tenantId });
      return;
    }
    if (!tenant.contract.support_console) throw new ForbiddenError('console:errors.not_offered');
    await signIn.start(ctx, { tenant: tenantId, returnTo }, {
      scope: 'openid profile',
      // A session signed in with less is stepped up by the provider (the acr_step_up check).
      acr_values: CONSOLE_ACR_VALUES.join(' '),
    });
  });

  router.get('/callback', async (ctx) => {
    const { pending, tokens, claims, providerSession } = await signIn.finish(ctx);
    // The provider asked for the method (acr_values), but the ID token is what proves it.
    const method = methodOfAcr(typeof claims.acr === 'string' ? claims.acr : undefined);
    if (!method || !isAtLeast(method, CONSOLE_MIN_METHOD)) throw new AppError('weak_method', 403, 'console:errors.weak_method', {}, '/console/');
    const staff = await deps.accounts.findById(claims.sub);
    if (!isStaff(staff, pending.tenant)) throw new AppError('not_staff', 403, 'console:errors.not_staff');
    const now = Math.floor(Date.now() / 1000);
    writeConsoleSession(
      ctx,
      {
        sub: claims.sub,
        tenant: pending.tenant,
        authTime: typeof claims.auth_time === 'number' ? claims.auth_time : now,
        acr: claims.acr as string,
        idToken: tokens.id_token!,
        exp: now + config.supportConsole.sessionTtlSeconds,
        sessionUid: providerSession.uid,
      },
      deps.secure,
    );
    ctx.status = 303;
    ctx.redirect(safeConsoleReturn(pending.returnTo));
  });

  // ログアウト: the console session ends with the provider session (RP-initiated logout).
  router.post('/logout', async (ctx) => {
    const session = readConsoleSession(ctx);
    if (!session) {
      ctx.status = 303;
      ctx.redirect('/console/logged-out');
      return;
    }
    ctx.status = 303;
    ctx.redirect(await signIn.endSessionUrl(ctx, session.tenant, session.idToken));
  });

  router.get('/logged-out', async (ctx) => {
    writeConsoleSession(ctx, undefined, deps.secure);
    await ctx.render('console/logged-out', {});
  });

  // アカウント検索: by the start of the user ID, a device's e-mail address, and status; paged.
  router.get('/', staffOnly, async (ctx) => {
    const { staff, tenant } = staffOf(ctx);
    const q = searchQuery.parse(ctx.query);
    const result = await deps.console.search(tenant.id, { userIdPrefix: q.user_id || undefined, email: q.email || undefined, status: q.status, page: q.page });
    const link = (page: number) => {
      const p = new URLSearchParams();
      if (q.user_id) p.set('user_id', q.user_id);
      if (q.email) p.set('email', q.email);
      if (q.status) p.set('status', q.status);
      p.set('page', String(page));
      return `/console/?${p.toString()}`;
    };
    const deleted = typeof ctx.query.deleted === 'string' ? ctx.query.deleted.slice(0, 64) : undefined;
    await ctx.render('console/accounts', { staff, tenant, menu: 'accounts', q, result, link, consoleTime, deleted });
  });

  // アカウント詳細: an account of the staff member's tenant only (another tenant's user ID is a 404).
  router.get('/accounts/:userId', staffOnly, async (ctx) => {
    const { staff, tenant } = staffOf(ctx);
    const detail = await deps.console.detail(tenant.id, ctx.params.userId ?? '');
    const done = typeof ctx.query.done === 'string' && DONE_NOTICES.includes(ctx.query.done) ? ctx.query.done : undefined;
    await ctx.render('console/account', { staff, tenant, menu: 'accounts', detail, consoleTime, actions: ACTIONS_OF[staff.role], done });
  });

  return router;
}
