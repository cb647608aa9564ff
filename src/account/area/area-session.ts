import type { Context, Next } from 'koa';
import type { AppConfig, Tenant, TenantDirectory } from '../../config/index.js';
import { ForbiddenError } from '../../http/errors.js';
import type { AccountRepository, AccountWithDevices } from '../../persistence/account.repository.js';
import { isLocked } from '../../lockout/account-lock.js';

const COOKIE = 'account_area';

/** The account area's own session (a signed cookie), made from the ID token it received as an OIDC client. */
export interface AreaSession {
  /** Account id (the ID token's sub). */
  sub: string;
  tenant: string;
  /** The relying site's client_id the user came from (for the way back). */
  from?: string;
  /** When the user last proved who they are (the ID token's auth_time), epoch seconds. */
  authTime: number;
  idToken: string;
  /** Session expiry, epoch seconds. */
  exp: number;
  /** The provider session behind this one: the ID token's sid, and the session's stable uid (looked up once at sign-in). */
  sid?: string;
  sessionUid?: string;
}

export interface AreaState {
  session: AreaSession;
  account: AccountWithDevices;
  tenant: Tenant;
}

export function readAreaSession(ctx: Context): AreaSession | undefined {
  if (ctx.state.areaSessionEnded) return undefined;
  const raw = ctx.cookies.get(COOKIE, { signed: true });
  if (!raw) return undefined;
  try {
    const s = JSON.parse(Buffer.from(raw, 'base64url').toString()) as AreaSession;
    return typeof s.sub === 'string' && typeof s.exp === 'number' && s.exp > Date.now() / 1000 ? s : undefined;
  } catch {
    return undefined;
  }
}

export function writeAreaSession(ctx: Context, session: AreaSession | undefined, secure: boolean) {
  const value = session ? Buffer.from(JSON.stringify(session)).toString('base64url') : '';
  ctx.cookies.set(COOKIE, value || null, { signed: true, httpOnly: true, sameSite: 'lax', path: '/account', secure: secure && ctx.secure, overwrite: true });
}

/**
 * An area session lives only as long as the provider session it came from: once that is gone (signed
 * out on another device, "sign out everywhere", logout at a site, expiry) the cookie is dropped, and
 * every account-area page asks the user to sign in again. Runs before the account-area routers.
 */
export function dropEndedAreaSessions(deps: { sessions: { isActive(uid: string): Promise<boolean> }; secure: boolean }) {
  return async (ctx: Context, next: Next) => {
    if (ctx.path === '/account' || ctx.path.startsWith('/account/')) {
      const session = readAreaSession(ctx);
      if (session && !(session.sessionUid && (await deps.sessions.isActive(session.sessionUid)))) {
        writeAreaSession(ctx, undefined, deps.secure);
        // Kept for the way back: signing in again needs the site the user came from.
        ctx.state.areaSessionEnded = { from: session.from };
      }
    }
    return next();
  };
}

/**
 * Loads the signed-in account for every account-area page. Without a session, pages send the user to
 * sign in (and back); a locked or deleted account loses its session.
 */
export function requireAreaSession(deps: { accounts: AccountRepository; tenants: TenantDirectory; secure: boolean }) {
  return async (ctx: Context, next: Next) => {
    const session = readAreaSession(ctx);
    const account = session ? await deps.accounts.findById(session.sub) : null;
    const tenant = session ? deps.tenants.tenant(session.tenant) : undefined;
    if (!session || !account || !tenant || account.tenantId !== tenant.id || isLocked(account) || !tenant.contract.account_area) {
      if (session) writeAreaSession(ctx, undefined, deps.secure);
      const back = ctx.method === 'GET' ? ctx.originalUrl : '/account/';
      ctx.status = 303;
      const ended = ctx.state.areaSessionEnded as { from?: string } | undefined;
      const from = session?.from ?? ended?.from ?? (typeof ctx.query.client_id === 'string' ? ctx.query.client_id : undefined);
      ctx.redirect(`/account/login?return=${encodeURIComponent(back)}${from ? `&client_id=${encodeURIComponent(from)}` : ''}`);
      return;
    }
    const area: AreaState = { session, account, tenant };
    ctx.state.area = area;
    return next();
  };
}

/**
 * Changes need a recent sign-in: past the configured age, the user is sent to enter the one-time
 * password again (max_age=0) and comes back to `returnTo`.
 */
export function requireFreshAuth(config: Pick<AppConfig, 'accountArea'>, returnTo?: (ctx: Context) => string) {
  return async (ctx: Context, next: Next) => {
    const area = ctx.state.area as AreaState;
    const age = Date.now() / 1000 - area.session.authTime;
    if (age > config.accountArea.reauthAgeSeconds) {
      const back = returnTo ? returnTo(ctx) : ctx.method === 'GET' ? ctx.originalUrl : '/account/';
      ctx.status = 303;
      ctx.redirect(`/account/reauth?return=${encodeURIComponent(back)}`);
      return;
    }
    return next();
  };
}

export type ContractFeature = 'device_add' | 'device_change' | 'device_delete';

/** A feature the tenant's contract does not include is refused on the server, not only hidden. */
export function requireContract(feature: ContractFeature) {
  return async (ctx: Context, next: Next) => {
    const area = ctx.state.area as AreaState;
    if (!area.tenant.contract[feature]) throw new ForbiddenError('area:errors.not_in_contract');
    return next();
  };
}

/** Only local paths under /account may be returned to (no open redirects). */
export function safeReturn(value: unknown): string {
  return typeof value === 'string' && /^\/account(\/[\w\-./?=&%]*)?$/.test(value) && !value.includes('//') ? value : '/account/';
}
