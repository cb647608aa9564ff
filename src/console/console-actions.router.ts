import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { AccountService } from '../account/account.service.js';
import type { AppConfig, TenantDirectory } from '../config/index.js';
import type { AuditAction, AuditService } from '../audit/audit.service.js';
import { AppError, BadRequestError, ForbiddenError, NotFoundError } from '../http/errors.js';
import type { AccountRepository } from '../persistence/account.repository.js';
import { CONSOLE_ACTIONS, mayDo, type ConsoleAction } from './console-roles.js';
import type { SessionRepository } from '../persistence/session.repository.js';
import { requireStaff, staffOf, staffRequest } from './console-session.js';
import { consoleTime } from './console.router.js';

/** The audit action each console action is recorded as. */
const AUDITED_AS: Record<ConsoleAction, AuditAction> = {
  unlock: 'account.unlocked',
  activation: 'account.activation_issued',
  'end-sessions': 'account.sessions_ended',
  'revoke-certificate': 'account.certificate_revoked',
  'login-method': 'account.updated',
  delete: 'account.deleted',
};

const isAction = (value: unknown): value is ConsoleAction => typeof value === 'string' && (CONSOLE_ACTIONS as readonly string[]).includes(value);

const field = (ctx: Context, name: string): string => {
  const v = (ctx.request as { body?: Record<string, unknown> }).body?.[name];
  return typeof v === 'string' ? v : '';
};

/**
 * The support console's actions on an account of the staff member's tenant: the account is looked up
 * with the staff member's tenant only, so a forged user ID of another tenant is a 404 before
 * anything happens. Every change goes through AccountService, which applies the contract's rules,
 * records the account event and the audit record (actor kind `console`, the staff member's user ID).
 */
export function consoleActionsRouter(deps: {
  config: Pick<AppConfig, 'issuer'>;
  tenants: TenantDirectory;
  accounts: AccountRepository;
  sessions: SessionRepository;
  accountService: AccountService;
  /** Refused attempts (a 4xx: not allowed, not found, bad input) go to the audit trail too. */
  audit?: Pick<AuditService, 'recordRefusal'>;
  secure: boolean;
}) {
  const router = new Router({ prefix: '/console/accounts/:userId/actions' });
  const staffOnly = requireStaff({ accounts: deps.accounts, tenants: deps.tenants, sessions: deps.sessions, secure: deps.secure });
  const { accountService } = deps;

  // The action must exist and the staff member's role must allow it (403 otherwise, on GET and POST alike).
  async function allowed(ctx: Context, next: Next) {
    const action = ctx.params.action;
    if (!isAction(action)) throw new NotFoundError();
    if (!mayDo(staffOf(ctx).staff.role, action)) throw new ForbiddenError('console:errors.not_allowed');
    return next();
  }

  // A change turned down is recorded as a refused attempt, as the management API does (changes made are
  // recorded by AccountService).
  async function audited(ctx: Context, next: Next) {
    try {
      await next();
    } catch (e) {
      const action = ctx.params.action;
      const who = staffRequest(ctx).staff;
      if (deps.audit && who && isAction(action) && e instanceof AppError && e.status >= 400 && e.status < 500) {
        await deps.audit.recordRefusal({ tenantId: staffOf(ctx).tenant.id, who, action: AUDITED_AS[action], userId: ctx.params.userId ?? null, errorCode: e.code });
      }
      throw e;
    }
  }

  const deviceNumber = (value: unknown): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new BadRequestError('console:errors.bad_device', {}, '/console/');
    return n;
  };

  router.get('/:action', staffOnly, allowed, async (ctx) => {
    const { staff, tenant } = staffOf(ctx);
    const action = ctx.params.action as ConsoleAction;
    const account = await accountService.find(tenant.id, ctx.params.userId ?? '');
    const device = action === 'revoke-certificate' ? account.devices.find((d) => d.number === deviceNumber(ctx.query.device)) : undefined;
    if (action === 'revoke-certificate' && !device) throw new NotFoundError();
    await ctx.render('console/confirm', { staff, tenant, menu: 'accounts', account, action, device, methods: tenant.contract.login_methods, consoleTime });
  });

  router.post('/:action', staffOnly, audited, allowed, async (ctx) => {
    const { staff, tenant } = staffOf(ctx);
    const action = ctx.params.action as ConsoleAction;
    const userId = ctx.params.userId ?? '';
    const who = staffRequest(ctx);
    const locale = ctx.state.locale as 'ja' | 'en';
    const back = (done: string) => {
      ctx.status = 303;
      ctx.redirect(`/console/accounts/${encodeURIComponent(userId)}?done=${done}`);
    };
    switch (action) {
      case 'unlock':
        await accountService.unlock(tenant.id, userId, { ...who, locale });
        return back('unlocked');
      case 'activation': {
        const mail = field(ctx, 'delivery') === 'mail';
        const issued = await accountService.issueActivation(tenant.id, userId, { ...who, mail, locale });
        if (mail) return back('activation_mailed');
        // Shown once: this page is not stored (Cache-Control: no-store) and the code is nowhere else.
        await ctx.render('console/activation-issued', { staff, tenant, menu: 'accounts', userId, issued, consoleTime });
        return;
      }
      case 'end-sessions':
        await accountService.endSessions(tenant.id, userId, who);
        return back('sessions_ended');
      case 'revoke-certificate':
        await accountService.revokeCertificate(tenant.id, userId, deviceNumber(field(ctx, 'device')), who);
        return back('certificate_revoked');
      case 'login-method': {
        // A method the account has no credentials for sends it through activation again, mailed to
        // the user: the credential step is the user's, never the staff member's.
        const updated = await accountService.update(tenant.id, userId, { loginMethod: field(ctx, 'method'), mailActivation: true, locale }, who);
        return back(updated.activation ? 'method_changed_activation' : 'method_changed');
      }
      case 'delete': {
        // Typed confirmation: the user ID, exactly.
        if (field(ctx, 'confirm_user_id') !== userId) {
          await accountService.find(tenant.id, userId);
          throw new BadRequestError('console:errors.confirm_mismatch', {}, `/console/accounts/${encodeURIComponent(userId)}/actions/delete`);
        }
        await accountService.delete(tenant.id, userId, who);
        ctx.status = 303;
        ctx.redirect(`/console/?deleted=${encodeURIComponent(userId)}`);
        return;
      }
    }
  });

  return router;
}
