import { deliverableAddresses } from '../../login/factors/email-otp.factor.js';
import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import type { AppConfig, TenantDirectory } from '../../config/index.js';
import { formatEventTime } from '../../history/event-time.js';
import { clientIp } from '../../http/client-ip.js';
import { AppError } from '../../http/errors.js';
import type { AccountRepository } from '../../persistence/account.repository.js';
import type { AccountSessionService, SessionActor } from '../account-session.service.js';
import { requireAreaSession, requireFreshAuth, writeAreaSession, type AreaState } from './area-session.js';

const BASE = '/account/sessions';
// oidc-provider's session uids are nanoids (43 characters of base64url).
const sessionUid = z.string().regex(/^[A-Za-z0-9_-]{16,64}$/);

export interface SessionsRouterDeps {
  config: Pick<AppConfig, 'accountArea'>;
  tenants: TenantDirectory;
  accounts: AccountRepository;
  sessions: AccountSessionService;
  secure: boolean;
}

/**
 * ログイン中のセッション: where the account is signed in (each provider session: when, how, which
 * sites, this browser marked), signing out another session, and すべての端末からログアウト.
 * Both sign-outs are changes, so they need a recent sign-in like every other change.
 */
export function sessionsRouter(deps: SessionsRouterDeps) {
  const router = new Router({ prefix: '/account' });
  const session = requireAreaSession(deps);
  // A POST cannot be replayed after re-authentication: the user comes back to the list.
  const fresh = requireFreshAuth(deps.config, () => BASE);

  const actorOf = (ctx: Context): SessionActor => {
    const area = ctx.state.area as AreaState;
    return { accountId: area.account.id, tenantId: area.tenant.id, currentSessionUid: area.session.sessionUid ?? '', sourceIp: clientIp(ctx) };
  };

  router.get('/sessions', session, async (ctx) => {
    const area = ctx.state.area as AreaState;
    const t = ctx.state.t as (k: string, p?: object) => string;
    const sessions = await deps.sessions.list(actorOf(ctx));
    const rows = sessions.map((s) => ({
      uid: s.uid,
      current: s.current,
      time: s.loginAt ? formatEventTime(s.loginAt, ctx.state.locale) : '-',
      iso: s.loginAt?.toISOString(),
      method: s.method ? t(`sessions:methods.${s.method}`) : s.amr.join(', ') || '-',
      sites: s.sites.map((site) => (site.console ? t('sessions:console') : site.name ?? site.clientId)),
    }));
    await ctx.render('account/sessions', {
      pageTitle: t('sessions:title'),
      area,
      menu: 'sessions',
      rows,
      notice: ctx.query.signed_out === '1' ? t('sessions:signed_out') : undefined,
    });
  });

  router.post('/sessions/:uid/sign-out', session, fresh, async (ctx) => {
    const uid = sessionUid.safeParse(ctx.params.uid);
    const result = uid.success ? await deps.sessions.signOut(actorOf(ctx), uid.data) : 'not_found';
    if (result === 'current') throw new AppError('current_session', 400, 'sessions:errors.current', {}, BASE);
    if (result === 'not_found') throw new AppError('session_not_found', 404, 'sessions:errors.not_found', {}, BASE);
    ctx.status = 303;
    ctx.redirect(`${BASE}?signed_out=1`);
  });

  router.post('/sessions/sign-out-everywhere', session, fresh, async (ctx) => {
    const { account } = ctx.state.area as AreaState;
    await deps.sessions.signOutEverywhere(actorOf(ctx), { to: deliverableAddresses(account), userId: account.userId, locale: ctx.state.locale });
    writeAreaSession(ctx, undefined, deps.secure);
    ctx.status = 303;
    ctx.redirect(`${BASE}/signed-out`);
  });

  // Outside the area session, which has just ended.
  router.get('/sessions/signed-out', async (ctx) => {
    const t = ctx.state.t as (k: string, p?: object) => string;
    await ctx.render('account/sessions-signed-out', { pageTitle: t('sessions:everywhere_done.title') });
  });

  return router;
}
