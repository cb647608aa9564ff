import type { LoginMethod, Tenant, TenantDirectory } from '../config/index.js';
import { isEmailAddress } from '../mail/email-address.js';
import { LOGIN_METHODS } from '../config/tenants.js';
import type { ActivationService, Actor, IssuedActivation } from '../activation/activation.service.js';
import type { Locale } from '../i18n/index.js';
import type { MailQueue } from '../mail/mail.types.js';
import { ACCOUNT_ROLES, type AccountRepository, type AccountRole, type AccountWithDevices } from '../persistence/account.repository.js';
import type { LoginEvent, LoginEventRepository } from '../persistence/login-event.repository.js';
import { deliverableAddresses } from '../login/factors/email-otp.factor.js';
import { METHOD_FACTORS } from '../login/login-methods.js';
import type { PasskeyService } from '../passkey/passkey.service.js';
import type { CertificateService } from '../certificates/certificate.service.js';
import type { AccountEventService } from './account-event.service.js';
import type { AccountLifecycleService } from './account-lifecycle.service.js';
import { AccountExistsError, AccountNotFoundError, AccountValidationError } from './account-errors.js';
import { isLocked } from '../lockout/account-lock.js';
import { auditState, type AuditAction, type AuditService, type AuditState, type StaffActor } from '../audit/audit.service.js';
import type { WebhookEvents } from '../webhooks/webhook-events.js';

/** Who asks: the account event's actor, and for staff (API, CLI, console) who exactly, for the audit trail. */
export type StaffRequest = Actor & { staff?: StaffActor };

export type DeviceKind = 'pc' | 'mobile' | 'smartphone';
export const DEVICE_KINDS: readonly DeviceKind[] = ['pc', 'mobile', 'smartphone'];
export const USER_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

export interface DeviceInput {
  email: string;
  kind?: DeviceKind;
}

export type AccountStatusView = 'pending_activation' | 'active' | 'locked';

/** An account as the management API and CLI show it. */
export interface AccountView {
  tenant: string;
  userId: string;
  status: AccountStatusView;
  loginMethod: string;
  /** Staff of the tenant's support desk (support console): `support` or `admin`; null for everyone else. */
  role: AccountRole | null;
  failedAttempts: number;
  lockedAt: string | null;
  /** When a temporary lock lifts by itself; null: not locked, or locked until an administrator unlocks. */
  lockedUntil: string | null;
  activatedAt: string | null;
  lastLoginAt: string | null;
  createdAt: string;
  devices: Array<{ number: number; email: string; kind: DeviceKind; verified: boolean }>;
}

export function toView(a: AccountWithDevices): AccountView {
  // A lock that lifted by itself is shown as none.
  const locked = isLocked(a);
  return {
    tenant: a.tenantId,
    userId: a.userId,
    status: locked ? 'locked' : a.status,
    loginMethod: a.loginMethod,
    role: a.role,
    failedAttempts: a.failedAttempts,
    lockedAt: locked ? (a.lockedAt?.toISOString() ?? null) : null,
    lockedUntil: locked ? (a.lockedUntil?.toISOString() ?? null) : null,
    activatedAt: a.activatedAt?.toISOString() ?? null,
    lastLoginAt: a.lastLoginAt?.toISOString() ?? null,
    createdAt: a.createdAt.toISOString(),
    devices: a.devices.map((d) => ({ number: d.number, email: d.email, kind: d.kind, verified: d.verifiedAt !== null })),
  };
}

/**
 * Account provisioning for a tenant's back office (management API) and operators (CLI): the rules of
 * the tenant's contract are checked here, once, for both.
 */
export class AccountService {
  constructor(
    private readonly deps: {
      accounts: AccountRepository;
      loginEvents: LoginEventRepository;
      events: AccountEventService;
      activation: ActivationService;
      mail: MailQueue;
      tenants: TenantDirectory;
      lifecycle: Pick<AccountLifecycleService, 'endAccess'>;
      certificates: Pick<CertificateService, 'hasLiveCertificate' | 'listForAccount' | 'revokeForDevice'>;
      passkeys: Pick<PasskeyService, 'hasPasskey'>;
      /** The staff audit trail: every change made here by staff, with the account's state before and after. */
      audit?: Pick<AuditService, 'record'>;
      webhooks?: Pick<WebhookEvents, 'emit'>;
    },
  ) {}

  private async audit(tenantId: string, who: StaffRequest, action: AuditAction, userId: string, before: AuditState | null, after: AccountWithDevices | null): Promise<void> {
    if (!who.staff || !this.deps.audit) return;
    await this.deps.audit.record({ tenantId, who: who.staff, action, userId, before, after: after ? auditState(after) : null });
  }

  private tenant(tenantId: string): Tenant {
    const t = this.deps.tenants.tenant(tenantId);
    if (!t) throw new AccountNotFoundError();
    return t;
  }

  async find(tenantId: string, userId: string): Promise<AccountWithDevices> {
    const a = await this.deps.accounts.findByUserId(tenantId, userId);
    if (!a) throw new AccountNotFoundError();
    return a;
  }

  private checkMethod(tenant: Tenant, method: string | undefined): LoginMethod {
    const chosen = method ?? tenant.contract.login_methods[0] ?? 'otp';
    if (!(LOGIN_METHODS as readonly string[]).includes(chosen)) throw new AccountValidationError('loginMethod', 'account:errors.unknown_method', { method: chosen });
    if (!(tenant.contract.login_methods as string[]).includes(chosen)) throw new AccountValidationError('loginMethod', 'account:errors.method_not_in_contract', { method: chosen });
    return chosen as LoginMethod;
  }

  private checkRole(role: string | null): AccountRole | null {
    if (role !== null && !(ACCOUNT_ROLES as readonly string[]).includes(role)) throw new AccountValidationError('role', 'account:errors.unknown_role', { role });
    return role as AccountRole | null;
  }

  private checkDevices(tenant: Tenant, devices: DeviceInput[]): Array<{ email: string; kind: DeviceKind }> {
    if (devices.length === 0) throw new AccountValidationError('devices', 'account:errors.devices_required');
    if (devices.length > tenant.contract.max_devices) throw new AccountValidationError('devices', 'account:errors.too_many_devices', { max: tenant.contract.max_devices });
    const seen = new Set<string>();
    return devices.map((d, i) => {
      const email = d.email.trim();
      if (!isEmailAddress(email)) throw new AccountValidationError(`devices[${i}].email`, 'account:errors.bad_email');
      if (seen.has(email.toLowerCase())) throw new AccountValidationError(`devices[${i}].email`, 'account:errors.duplicate_email');
      seen.add(email.toLowerCase());
      const kind = d.kind ?? 'pc';
      if (!DEVICE_KINDS.includes(kind)) throw new AccountValidationError(`devices[${i}].kind`, 'account:errors.bad_kind');
      return { email, kind };
    });
  }

  /**
   * Creates an account waiting for activation and issues its activation code. Creating an existing
   * user ID is a conflict, never a duplicate.
   */
  async create(
    tenantId: string,
    input: { userId: string; devices: DeviceInput[]; loginMethod?: string; mailActivation?: boolean; locale?: Locale },
    who: StaffRequest,
  ): Promise<{ account: AccountWithDevices; activation: IssuedActivation }> {
    const tenant = this.tenant(tenantId);
    if (!USER_ID_PATTERN.test(input.userId)) throw new AccountValidationError('userId', 'account:errors.bad_user_id');
    const loginMethod = this.checkMethod(tenant, input.loginMethod);
    const devices = this.checkDevices(tenant, input.devices);
    if (await this.deps.accounts.findByUserId(tenantId, input.userId)) throw new AccountExistsError();
    let account: AccountWithDevices;
    try {
      account = await this.deps.accounts.create({ tenantId, userId: input.userId, loginMethod, status: 'pending_activation', devices });
    } catch (e) {
      // Two creations racing for one user ID: the unique index decides, the loser gets a conflict.
      if ((e as { code?: string }).code === 'P2002') throw new AccountExistsError();
      throw e;
    }
    await this.deps.events.record({ tenantId, accountId: account.id, type: 'created', actor: who.actor, sourceIp: who.ip ?? null });
    let activation: IssuedActivation;
    try {
      activation = await this.deps.activation.issue(account, { ...who, mail: input.mailActivation, locale: input.locale });
    } catch (e) {
      // Nothing half-made (e.g. the activation mail could not be queued while Redis is down): the
      // account goes again, so the site's retry creates it instead of meeting a conflict.
      await this.deps.accounts.delete(account.id);
      throw e;
    }
    const created = (await this.deps.accounts.findById(account.id))!;
    await this.audit(tenantId, who, 'account.created', created.userId, null, created);
    return { account: created, activation };
  }

  /** One page of the tenant's accounts, newest first; `userIdPrefix` holds user-ID characters only (USER_ID_PATTERN's). */
  async list(tenantId: string, opts: { status?: AccountStatusView; userIdPrefix?: string; email?: string; page: number; perPage: number }) {
    this.tenant(tenantId);
    const { items, total } = await this.deps.accounts.list(tenantId, {
      status: opts.status,
      userIdPrefix: opts.userIdPrefix,
      email: opts.email,
      skip: (opts.page - 1) * opts.perPage,
      take: opts.perPage,
    });
    return { items, total, page: opts.page, perPage: opts.perPage };
  }

  /**
   * Changes the login method and/or replaces the devices. A new method whose credentials the account
   * lacks (no password, no live certificate, no passkey) sends it through activation again, where the user sets
   * them: the result then carries the fresh activation. Any method change ends the account's sessions.
   */
  async update(
    tenantId: string,
    userId: string,
    input: { loginMethod?: string; role?: string | null; devices?: DeviceInput[]; mailActivation?: boolean; locale?: Locale },
    who: StaffRequest,
  ): Promise<AccountWithDevices & { activation?: IssuedActivation }> {
    const tenant = this.tenant(tenantId);
    const account = await this.find(tenantId, userId);
    const loginMethod = input.loginMethod === undefined ? undefined : this.checkMethod(tenant, input.loginMethod);
    const role = input.role === undefined ? undefined : this.checkRole(input.role);
    const devices = input.devices === undefined ? undefined : this.checkDevices(tenant, input.devices);
    const updated = await this.deps.accounts.update(account.id, { loginMethod, role, devices });
    const changed = loginMethod !== undefined && loginMethod !== account.loginMethod;
    const lacksCredentials = changed && updated.status === 'active' && (await this.lacksCredentials(updated, loginMethod));
    await this.deps.events.record({
      tenantId,
      accountId: account.id,
      type: 'updated',
      actor: who.actor,
      sourceIp: who.ip ?? null,
      detail: { loginMethod: loginMethod ?? null, devices: devices ? devices.length : null, ...(role !== undefined ? { role } : {}) },
    });
    if (changed) await this.deps.webhooks?.emit(tenantId, 'login_method.changed', { userId, from: account.loginMethod, to: loginMethod });
    if (devices) await this.deps.webhooks?.emit(tenantId, 'devices.replaced', { userId, count: devices.length });
    if (lacksCredentials) {
      // issue() puts the account back to pending and ends its sessions.
      const activation = await this.deps.activation.issue(updated, { ...who, mail: input.mailActivation, locale: input.locale });
      const after = await this.find(tenantId, userId);
      await this.audit(tenantId, who, 'account.updated', userId, auditState(account), after);
      return { ...after, activation };
    }
    if (changed) await this.deps.lifecycle.endAccess(account.id, 'method_changed');
    await this.audit(tenantId, who, 'account.updated', userId, auditState(account), updated);
    return updated;
  }

  /** Whether the account has nothing to pass one of the method's factors with. */
  private async lacksCredentials(account: AccountWithDevices, method: LoginMethod): Promise<boolean> {
    const factors = METHOD_FACTORS[method];
    if (factors.includes('password') && !account.passwordHash) return true;
    // A passkey is registered at the fresh activation, as a password is set there.
    if (factors.includes('passkey') && !(await this.deps.passkeys.hasPasskey(account.id))) return true;
    return factors.includes('client_certificate') && !(await this.deps.certificates.hasLiveCertificate(account.id));
  }

  async issueActivation(tenantId: string, userId: string, opts: StaffRequest & { mail?: boolean; locale?: Locale }): Promise<IssuedActivation> {
    const account = await this.find(tenantId, userId);
    const issued = await this.deps.activation.issue(account, opts);
    // Handed out by the site instead of mailed: the user is still told that a new one exists.
    const to = deliverableAddresses(account);
    if (!opts.mail && to.length) await this.deps.mail.enqueue({ to, template: 'activation-reissued', locale: opts.locale ?? 'ja', params: { userId: account.userId } });
    if (opts.staff) await this.audit(tenantId, opts, 'account.activation_issued', userId, auditState(account), await this.deps.accounts.findById(account.id));
    return issued;
  }

  /** Unlocks the account, clears its counter, records it and tells the user by mail. */
  async unlock(tenantId: string, userId: string, who: StaffRequest & { locale?: Locale }): Promise<AccountWithDevices> {
    const account = await this.find(tenantId, userId);
    await this.deps.accounts.unlock(tenantId, userId);
    await this.deps.events.record({ tenantId, accountId: account.id, type: 'unlocked', actor: who.actor, sourceIp: who.ip ?? null, detail: { wasLocked: isLocked(account) } });
    const to = deliverableAddresses(account);
    if (isLocked(account) && to.length) await this.deps.mail.enqueue({ to, template: 'account-unlocked', locale: who.locale ?? 'ja', params: { userId } });
    const after = (await this.deps.accounts.findById(account.id))!;
    await this.audit(tenantId, who, 'account.unlocked', userId, auditState(account), after);
    return after;
  }

  /** Deletes the account and everything that names it (devices, events, sessions, grants, tokens). */
  async delete(tenantId: string, userId: string, who?: StaffRequest): Promise<void> {
    const account = await this.find(tenantId, userId);
    // First, so the sites registered for back-channel logout hear of the ended sessions.
    await this.deps.lifecycle.endAccess(account.id, 'deleted');
    await this.deps.accounts.delete(account.id);
    if (who) await this.audit(tenantId, who, 'account.deleted', userId, auditState(account), null);
    await this.deps.webhooks?.emit(tenantId, 'account.deleted', { userId });
  }

  /**
   * Ends every provider session of the account and revokes its grants and tokens (sites registered
   * for back-channel logout are told), for staff: the user's own way is the account area's
   * "sign out everywhere".
   */
  async endSessions(tenantId: string, userId: string, who: StaffRequest): Promise<{ sessions: number }> {
    const account = await this.find(tenantId, userId);
    const { sessions } = await this.deps.lifecycle.endAccess(account.id, 'staff_signed_out');
    await this.deps.events.record({ tenantId, accountId: account.id, type: 'signed_out_everywhere', actor: who.actor, sourceIp: who.ip ?? null, detail: { sessions } });
    await this.audit(tenantId, who, 'account.sessions_ended', userId, auditState(account), account);
    return { sessions };
  }

  /** Revokes the live client certificate of one device of the account (a lost or handed-on terminal). */
  async revokeCertificate(tenantId: string, userId: string, deviceNumber: number, who: StaffRequest): Promise<number> {
    const account = await this.find(tenantId, userId);
    const device = account.devices.find((d) => d.number === deviceNumber);
    if (!device) throw new AccountValidationError('device', 'account:errors.no_device');
    const revoked = await this.deps.certificates.revokeForDevice(device.id, 'admin');
    await this.audit(tenantId, who, 'account.certificate_revoked', userId, auditState(account), account);
    return revoked;
  }

  async loginEvents(tenantId: string, userId: string, opts: { page: number; perPage: number }): Promise<{ items: LoginEvent[]; page: number; perPage: number }> {
    const account = await this.find(tenantId, userId);
    const items = await this.deps.loginEvents.listForAccount(account.id, { skip: (opts.page - 1) * opts.perPage, take: opts.perPage });
    return { items, page: opts.page, perPage: opts.perPage };
  }
}
