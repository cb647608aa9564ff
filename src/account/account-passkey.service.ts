import type { PublicKeyCredentialCreationOptionsJSON } from '@simplewebauthn/server';
import { LOGIN_METHODS } from '../config/tenants.js';
import type { LoginMethod, Tenant } from '../config/index.js';
import { formatEventTime } from '../history/event-time.js';
import { AppError } from '../http/errors.js';
import type { Locale } from '../i18n/index.js';
import { deliverableAddresses } from '../login/factors/email-otp.factor.js';
import { effectiveMethod, PASSKEY_METHODS } from '../login/login-methods.js';
import type { MailQueue } from '../mail/mail.types.js';
import type { AccountWithDevices } from '../persistence/account.repository.js';
import type { Passkey } from '../persistence/passkey.repository.js';
import type { PasskeyService } from '../passkey/passkey.service.js';
import type { AccountEventService } from './account-event.service.js';

/** Whether a login method has a passkey step (`passkey`, `otp_passkey`). */
export const needsPasskey = (method: string): boolean => (PASSKEY_METHODS as readonly string[]).includes(method);

/** Whether the tenant's contract allows a method with a passkey step (the passkey screens exist only then). */
export const passkeysOffered = (tenant: Tenant): boolean => tenant.contract.login_methods.some((m: LoginMethod) => needsPasskey(m));

/**
 * The stored login methods under which an account must keep a passkey: the passkey methods, and any
 * method the contract no longer allows when it falls back to a passkey method (effectiveMethod).
 */
export const methodsKeepingOne = (tenant: Tenant): LoginMethod[] => LOGIN_METHODS.filter((m) => needsPasskey(m) || needsPasskey(effectiveMethod(m, tenant.contract)));

/** The last passkey of an account whose login method needs one: deleting it would leave no way in. */
export class LastPasskeyError extends AppError {
  constructor() {
    super('last_passkey', 409, 'passkey:area.errors.last_passkey');
  }
}

export interface PasskeyRequest {
  ip: string | null;
  locale: Locale;
}

/**
 * パスキー in the account area: the rules around PasskeyService's ceremonies — a passkey belongs to
 * one of the account's own devices or to none, each registration and deletion is recorded and mailed
 * to the account's devices, and the last passkey of a passkey method cannot go.
 */
export class AccountPasskeyService {
  constructor(
    private readonly deps: {
      passkeys: Pick<PasskeyService, 'list' | 'registrationOptions' | 'register' | 'rename' | 'deleteUnlessLast'>;
      events: AccountEventService;
      mail: MailQueue;
    },
  ) {}

  list(accountId: string): Promise<Passkey[]> {
    return this.deps.passkeys.list(accountId);
  }

  registrationOptions(account: AccountWithDevices, binding: string): Promise<PublicKeyCredentialCreationOptionsJSON> {
    return this.deps.passkeys.registrationOptions(account, binding);
  }

  /** The device a passkey is said to belong to, by its 端末No; undefined when it is not one of the account's. */
  deviceOf(account: AccountWithDevices, number: string): { id: string } | null | undefined {
    if (!number) return null;
    return account.devices.find((d) => String(d.number) === number);
  }

  /** Verifies and stores a new passkey (BadRequestError in the user's language otherwise), records it and tells the devices. */
  async register(account: AccountWithDevices, binding: string, raw: unknown, details: { name: string; deviceId: string | null }, req: PasskeyRequest, backUrl: string): Promise<Passkey> {
    const passkey = await this.deps.passkeys.register(account, binding, raw, details, backUrl);
    await this.record(account, 'passkey_registered', { passkey: passkey.id, name: passkey.name }, req);
    await this.notify(account, 'passkey-registered', passkey.name, req);
    return passkey;
  }

  /** False when the account has no such passkey (another account's id, a forged one). */
  async rename(account: AccountWithDevices, id: string, name: string, req: PasskeyRequest): Promise<boolean> {
    const done = await this.deps.passkeys.rename(account.id, id, name);
    if (done) await this.record(account, 'passkey_renamed', { passkey: id }, req);
    return done;
  }

  /** Whether deleting one passkey would leave an account of a passkey method with none (for the confirmation page). */
  async isLastNeeded(account: AccountWithDevices, tenant: Tenant): Promise<boolean> {
    if (!(methodsKeepingOne(tenant) as string[]).includes(account.loginMethod)) return false;
    return (await this.deps.passkeys.list(account.id)).length <= 1;
  }

  /**
   * Deletes one of the account's passkeys; null when it has no such passkey. The last passkey of a
   * passkey method is refused (LastPasskeyError): the user changes the method or registers another first.
   */
  async delete(account: AccountWithDevices, tenant: Tenant, id: string, req: PasskeyRequest): Promise<Passkey | null> {
    // Decided under a lock on the account: two deletes at once cannot both take "not the last one".
    const removed = await this.deps.passkeys.deleteUnlessLast(account.id, id, methodsKeepingOne(tenant));
    if (removed === 'last') throw new LastPasskeyError();
    if (!removed) return null;
    await this.record(account, 'passkey_deleted', { passkey: removed.id, name: removed.name }, req);
    await this.notify(account, 'passkey-deleted', removed.name, req);
    return removed;
  }

  private record(account: AccountWithDevices, type: 'passkey_registered' | 'passkey_renamed' | 'passkey_deleted', detail: Record<string, string>, req: PasskeyRequest) {
    return this.deps.events.record({ tenantId: account.tenantId, accountId: account.id, type, actor: 'user', sourceIp: req.ip, detail });
  }

  private async notify(account: AccountWithDevices, template: 'passkey-registered' | 'passkey-deleted', name: string, req: PasskeyRequest): Promise<void> {
    const to = deliverableAddresses(account);
    if (to.length)
      await this.deps.mail.enqueue({
        to,
        template,
        locale: req.locale,
        params: { userId: account.userId, name, time: formatEventTime(new Date(), req.locale), ip: req.ip ?? '-' },
        tenantId: account.tenantId,
      });
  }
}
