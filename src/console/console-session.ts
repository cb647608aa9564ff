import type { Context, Next } from 'koa';
import type { Tenant, TenantDirectory } from '../config/index.js';
import { ForbiddenError } from '../http/errors.js';
import { clientIp } from '../http/client-ip.js';
import { requestIdOf } from '../http/request-id.js';
import { isLocked } from '../lockout/account-lock.js';
import type { StaffRequest } from '../account/account.service.js';
import type { AccountRepository, AccountRole, AccountWithDevices } from '../persistence/account.repository.js';

const COOKIE = 'support_console';

/** The support console's own session (a signed cookie), made from the ID token it received as an OIDC client. */
export interface ConsoleSession {
  /** The staff account's id (the ID token's sub). */
  sub: string;
  tenant: string;
  authTime: number;
  /** The login method's acr the staff signed in with (checked at the callback). */
  acr: string;
  idToken: string;
  /** Session expiry, epoch seconds. */
  exp: number;
  /** The provider session behind this one (its stable uid): the console session ends with it. */
  sessionUid: string;
}

/** The signed-in staff member, for every console page. */
export interface StaffState {
  session: ConsoleSession;
  staff: AccountWithDevices & { role: AccountRole };
  tenant: Tenant;
}

/**
 * Staff of a tenant's support desk: an active, unlocked account of that tenant with the role
 * `support` or `admin`. Checked at the callback and again on every request, so a role taken away, a
 * lock or a delete ends the staff member's access at once.
 */
export function isStaff(account: AccountWithDevices | null, tenantId: string): account is AccountWithDevices & { role: AccountRole } {
  return !!account && account.tenantId === tenantId && account.status === 'active' && !isLocked(account) && (account.role === 'support' || account.role === 'admin');
}

export function readConsoleSession(ctx: Context): ConsoleSession | undefined {
  const raw = ctx.cookies.get(COOKIE, { signed: true });
  if (!raw) return undefined;
  try {
    const s = JSON.parse(Buffer.from(raw, 'base64url').toString()) as ConsoleSession;
    return typeof s.sub === 'string' && typeof s.tenant === 'string' && typeof s.exp === 'number' && s.exp > Date.now() / 1000 ? s : undefined;
  } catch {
    return undefined;
  }
}

export function writeConsoleSession(ctx: Context, session: ConsoleSession | undefined, secure: boolean) {
  const value = session ? Buffer.from(JSON.stringify(session)).toString('base64url') : '';
  // SameSite strict: no console page acts on a request started from another site.
  ctx.cookies.set(COOKIE, value || null, { signed: true, httpOnly: true, sameSite: 'strict', path: '/console', secure: secure && ctx.secure, overwrite: true });
}

/**
 * Loads the signed-in staff member for every console page. Without a session (or once its provider
 * session has ended) the page sends the browser to sign in and back; a signed-in account that is not
 * (or no longer) staff of the console's tenant gets 403.
 */
export function requireStaff(deps: { accounts: Pick<AccountRepository, 'findById'>; tenants: TenantDirectory; sessions: { isActive(uid: string): Promise<boolean> }; secure: boolean }) {
  return async (ctx: Context, next: Next) => {
    const session = readConsoleSession(ctx);
    const found = session ? deps.tenants.tenant(session.tenant) : undefined;
    // A tenant whose contract no longer offers the console: its sessions are no more.
    const tenant = found?.contract.support_console ? found : undefined;
    if (!session || !tenant || !(await deps.sessions.isActive(session.sessionUid))) {
      if (session) writeConsoleSession(ctx, undefined, deps.secure);
      const back = ctx.method === 'GET' ? ctx.originalUrl : '/console/';
      ctx.status = 303;
      ctx.redirect(`/console/login?return=${encodeURIComponent(back)}${session ? `&tenant=${encodeURIComponent(session.tenant)}` : ''}`);
      return;
    }
    const staff = await deps.accounts.findById(session.sub);
    if (!isStaff(staff, tenant.id)) {
      writeConsoleSession(ctx, undefined, deps.secure);
      throw new ForbiddenError('console:errors.not_staff');
    }
    const state: StaffState = { session, staff, tenant };
    ctx.state.console = state;
    return next();
  };
}

export const staffOf = (ctx: Context): StaffState => ctx.state.console as StaffState;

/** Who acts, for account events ('admin') and the audit trail (kind `console`, the staff's user ID). */
export function staffRequest(ctx: Context): StaffRequest {
  const { staff } = staffOf(ctx);
  const ip = clientIp(ctx);
  return { actor: 'admin', ip, staff: { kind: 'console', id: staff.userId, ip, requestId: requestIdOf(ctx) ?? null } };
}

/** Only local paths under /console may be returned to (no open redirects). */
export function safeConsoleReturn(value: unknown): string {
  return typeof value === 'string' && /^\/console(\/[\w\-./?=&%@]*)?$/.test(value) && !value.includes('//') ? value : '/console/';
}
