import type { LoginMethod, Tenant } from '../config/index.js';
import type { CertificateService, IssuedCertificate } from '../certificates/certificate.service.js';
import { hashSecret } from '../credentials/hashing.js';
import { checkPassword, type PasswordProblem } from '../credentials/password-policy.js';
import { translator, type Locale } from '../i18n/index.js';
import { deliverableAddresses } from '../login/factors/email-otp.factor.js';
import { effectiveMethod, METHOD_FACTORS } from '../login/login-methods.js';
import type { MailQueue } from '../mail/mail.types.js';
import type { PasskeyService } from '../passkey/passkey.service.js';
import type { AccountRepository, AccountWithDevices } from '../persistence/account.repository.js';
import type { AccountEventService } from './account-event.service.js';
import type { AccountLifecycleService } from './account-lifecycle.service.js';

export type MethodChangeProblem = { field: 'method'; problem: 'not_allowed' | 'passkey_required' } | { field: 'password'; problem: 'required' | PasswordProblem };

export interface MethodChangeResult {
  from: LoginMethod;
  to: LoginMethod;
  /** New certificates (certificate method), with their download passwords. */
  certificates: Array<IssuedCertificate & { deviceNumber: number; email: string }>;
}

/**
 * ログイン方法の変更 (manual appendix 2): switches the account to another method its contract
 * allows and issues its credentials again — a new password for password methods, new certificates
 * for the certificate method — and retires the old ones.
 */
export class LoginMethodService {
  constructor(
    private readonly deps: {
      accounts: AccountRepository;
      certificates: CertificateService;
      events: AccountEventService;
      mail: MailQueue;
      lifecycle: Pick<AccountLifecycleService, 'endAccess'>;
      passkeys: Pick<PasskeyService, 'hasPasskey'>;
      passwordMinLength: number;
    },
  ) {}

  current(account: AccountWithDevices, tenant: Tenant): LoginMethod {
    return effectiveMethod(account.loginMethod, tenant.contract);
  }

  needsPassword(method: LoginMethod): boolean {
    return METHOD_FACTORS[method].includes('password');
  }

  needsCertificate(method: LoginMethod): boolean {
    return METHOD_FACTORS[method].includes('client_certificate');
  }

  needsPasskey(method: LoginMethod): boolean {
    return METHOD_FACTORS[method].includes('passkey');
  }

  /** The methods offered (the contract's), or an empty list when there is nothing to choose. */
  choices(tenant: Tenant): LoginMethod[] {
    return tenant.contract.login_methods.length > 1 ? [...tenant.contract.login_methods] : [];
  }

  /**
   * The methods this account may choose now: the contract's, without the passkey methods until the
   * account has a passkey (registered under パスキー first). `withheld`: the passkey methods left out.
   */
  async choicesFor(account: AccountWithDevices, tenant: Tenant): Promise<{ choices: LoginMethod[]; withheld: LoginMethod[] }> {
    const all = this.choices(tenant);
    if (!all.some((m) => this.needsPasskey(m)) || (await this.deps.passkeys.hasPasskey(account.id))) return { choices: all, withheld: [] };
    return { choices: all.filter((m) => !this.needsPasskey(m)), withheld: all.filter((m) => this.needsPasskey(m)) };
  }

  /** Like `check`, and a passkey method is refused while the account has no passkey. */
  async checkFor(account: AccountWithDevices, tenant: Tenant, method: unknown, password?: string, confirm?: string): Promise<MethodChangeProblem | undefined> {
    const problem = this.check(account, tenant, method, password, confirm);
    if (problem) return problem;
    if (this.needsPasskey(method as LoginMethod) && !(await this.deps.passkeys.hasPasskey(account.id))) return { field: 'method', problem: 'passkey_required' };
    return undefined;
  }

  /** The contract's rules and the password's (use `checkFor`, which adds the passkey rule). */
  check(account: AccountWithDevices, tenant: Tenant, method: unknown, password?: string, confirm?: string): MethodChangeProblem | undefined {
    if (typeof method !== 'string' || !this.choices(tenant).includes(method as LoginMethod)) return { field: 'method', problem: 'not_allowed' };
    if (this.needsPassword(method as LoginMethod)) {
      if (!password) return { field: 'password', problem: 'required' };
      const problem = checkPassword(password, confirm ?? '', { minLength: this.deps.passwordMinLength, userId: account.userId });
      if (problem) return { field: 'password', problem };
    }
    return undefined;
  }

  /**
   * Applies a checked change (call `checkFor` first). The account's passkeys stay whatever the method:
   * they are the user's to delete under パスキー. Every other session of the account ends with its
   * tokens; the one that made the change (`sessionUid`, just re-authenticated) stays, so its owner can
   * download the new certificates.
   */
  async change(
    account: AccountWithDevices,
    tenant: Tenant,
    to: LoginMethod,
    password: string | undefined,
    who: { ip: string | null; locale: Locale; sessionUid?: string },
  ): Promise<MethodChangeResult> {
    const from = this.current(account, tenant);
    await this.deps.accounts.setPassword(account.id, this.needsPassword(to) && password ? await hashSecret(password) : null);
    const certificates: MethodChangeResult['certificates'] = [];
    if (this.needsCertificate(to)) {
      // Every device gets a new certificate; issuing one revokes the device's previous one.
      for (const device of account.devices) {
        const issued = await this.deps.certificates.issue(account.id, device.id);
        certificates.push({ ...issued, deviceNumber: device.number, email: device.email });
      }
    } else {
      await this.deps.certificates.revokeForAccount(account.id, 'method_changed');
    }
    await this.deps.accounts.update(account.id, { loginMethod: to });
    await this.deps.lifecycle.endAccess(account.id, 'method_changed', { keepSessionUid: who.sessionUid });
    await this.deps.events.record({ tenantId: account.tenantId, accountId: account.id, type: 'login_method_changed', actor: 'user', sourceIp: who.ip, detail: { from, to } });
    const recipients = deliverableAddresses(account);
    if (recipients.length)
      await this.deps.mail.enqueue({
        to: recipients,
        template: 'login-method-changed',
        locale: who.locale,
        params: { userId: account.userId, from: translator(who.locale)(`history:methods.${from}`), to: translator(who.locale)(`history:methods.${to}`) },
      });
    return { from, to, certificates };
  }
}
