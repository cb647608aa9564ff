import Router from '@koa/router';
import type { Context } from 'koa';
import { accountConsoleClientId, type AppConfig, type TenantDirectory } from '../../config/index.js';
import { AppError, BadRequestError, ForbiddenError } from '../../http/errors.js';
import { firstPartySignIn } from '../../http/first-party-sign-in.js';
import type { AccountRepository } from '../../persistence/account.repository.js';
import type { CertificateService } from '../../certificates/certificate.service.js';
import type { LoginEventRepository } from '../../persistence/login-event.repository.js';
import type { SessionRepository } from '../../persistence/session.repository.js';
import { readAreaSession, requireAreaSession, safeReturn, writeAreaSession, type AreaState } from './area-session.js';

const PENDING = 'account_area_login';

/**
 * The account area (manual chapter 5) is a first-party OIDC client of this provider, one per tenant
 * (account-console-<tenant>), talking to it over HTTP with openid-client like any relying site.
 * This router holds its sign-in, sign-out and top page; the feature pages are their own routers
 * under the same prefix, behind `requireAreaSession`.
 */
export function accountAreaRouter(deps: {
  config: AppConfig;
  tenants: TenantDirectory;
  accounts: AccountRepository;
  loginEvents: LoginEventRepository;
  sessions: SessionRepository;
  certificates: Pick<CertificateService, 'listForAccount'>;
  secure: boolean;
}) {
  const { config, tenants } = deps;
  const router = new Router({ prefix: '/account' });
  const signIn = firstPartySignIn({
    issuer: config.issuer,
    path: '/account',
    clientIdOf: accountConsoleClientId,
    pendingCookie: PENDING,
    secure: deps.secure,
    sessions: deps.sessions,
    errors: {
      noSignIn: () => new BadRequestError('area:errors.no_sign_in'),
      signInFailed: () => new AppError('sign_in_failed', 401, 'area:errors.sign_in_failed', {}, '/account/'),
    },
  });

  /** Starts the OIDC sign-in for a tenant's account console; `maxAge0` forces the user to prove themselves again. */
  async function startSignIn(ctx: Context, tenantId: string, from: string | undefined, returnTo: string, maxAge0: boolean) {
    await signIn.start(ctx, { tenant: tenantId, from, returnTo }, {
      scope: 'openid profile email',
      // prompt=login too: max_age=0 alone lets a login made within the same second through.
      ...(maxAge0 ? { max_age: '0', prompt: 'login' } : {}),
    });
  }

  // Entry from a relying site's link: /account/?client_id=<the site's client_id>.
  router.get('/login', async (ctx) => {
    const clientId = typeof ctx.query.client_id === 'string' ? ctx.query.client_id : readAreaSession(ctx)?.from;
    const found = clientId ? tenants.client(clientId) : undefined;
    if (!found) throw new BadRequestError('area:errors.enter_from_site');
    if (!found.tenant.contract.account_area) throw new ForbiddenError('area:errors.area_not_offered');
    await startSignIn(ctx, found.tenant.id, found.client.client_id, safeReturn(ctx.query.return), false);
  });

  router.get('/callback', async (ctx) => {
    const { pending, tokens, claims, providerSession, sid } = await signIn.finish(ctx);
    const now = Math.floor(Date.now() / 1000);
    writeAreaSession(
      ctx,
      {
        sub: claims.sub,
        tenant: pending.tenant,
        from: pending.from,
        authTime: typeof claims.auth_time === 'number' ? claims.auth_time : now,
        idToken: tokens.id_token!,
        exp: now + config.accountArea.sessionTtlSeconds,
        sid,
        sessionUid: providerSession.uid,
      },
      deps.secure,
    );
    ctx.status = 303;
    ctx.redirect(safeReturn(pending.returnTo));
  });

  // Asks for the one-time password again (max_age=0) before a change, then returns to the page.
  router.get('/reauth', async (ctx) => {
    const session = readAreaSession(ctx);
    if (!session) {
      // Its provider session ended meanwhile (dropEndedAreaSessions): an ordinary sign-in from the same site.
      const from = (ctx.state.areaSessionEnded as { from?: string } | undefined)?.from;
      ctx.status = 303;
      ctx.redirect(`/account/login?return=${encodeURIComponent(safeReturn(ctx.query.return))}${from ? `&client_id=${encodeURIComponent(from)}` : ''}`);
      return;
    }
    await startSignIn(ctx, session.tenant, session.from, safeReturn(ctx.query.return), true);
  });

  // ログアウト: ends the area session and the provider session (RP-initiated logout). The area session
  // stays until the user confirms: it ends with its provider session (dropEndedAreaSessions).
  router.post('/logout', async (ctx) => {
    const session = readAreaSession(ctx);
    if (!session) {
      ctx.status = 303;
      ctx.redirect('/account/logged-out');
      return;
    }
    ctx.status = 303;
    ctx.redirect(await signIn.endSessionUrl(ctx, session.tenant, session.idToken));
  });

  router.get('/logged-out', async (ctx) => {
    await ctx.render('account/logged-out', {});
  });

  // アカウント管理 (top): the account's devices, and when and where it last signed in before.
  router.get('/', requireAreaSession(deps), async (ctx) => {
    const area = ctx.state.area as AreaState;
    // The newest success is this session's own sign-in; the one before it is "the previous login".
    const successes = await deps.loginEvents.listSuccesses(area.account.id, 2);
    // The device table's certificate columns: each device's current certificate, if any.
    const certificates: Record<string, { expiry: string; downloadPassword: string; renewable: boolean; status: string }> = {};
    for (const c of await deps.certificates.listForAccount(area.account.id)) {
      if (!c.deviceId || certificates[c.deviceId] || c.status === 'revoked') continue;
      certificates[c.deviceId] = { expiry: c.notAfter.toISOString().slice(0, 10).replaceAll('-', '/'), downloadPassword: c.downloadPassword, renewable: c.renewable, status: c.status };
    }
    await ctx.render('account/index', { area, menu: 'devices', previousLogin: successes[1] ?? null, contract: area.tenant.contract, certificates });
  });

  return router;
}
