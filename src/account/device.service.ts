import { randomUUID, timingSafeEqual } from 'node:crypto';
import { EMAIL_ADDRESS_MAX_LENGTH, isEmailAddress } from '../mail/email-address.js';
import type { Contract, LoginMethod } from '../config/index.js';
import { METHOD_FACTORS } from '../login/login-methods.js';
import { AppError, RateLimitedError } from '../http/errors.js';
import type { RateLimits } from '../http/rate-limit.js';
import { translator, type Locale } from '../i18n/index.js';
import { deliverableAddresses } from '../login/factors/email-otp.factor.js';
import type { MailQueue } from '../mail/mail.types.js';
import type { OtpService } from '../otp/otp.service.js';
import type { AccountWithDevices } from '../persistence/account.repository.js';
import { proofTarget, type Device, type DeviceRepository, type NewDeviceCode } from '../persistence/device.repository.js';
import type { AccountEventService, AccountEventType } from './account-event.service.js';
import { DEVICE_KINDS, type DeviceKind } from './account.service.js';

/** Wrong proof codes allowed per procedure; the last one calls the procedure off. */
export const DEVICE_PROOF_MAX_ATTEMPTS = 5;
/** Longest address accepted (RFC 5321's path limit). */
export const EMAIL_MAX_LENGTH = EMAIL_ADDRESS_MAX_LENGTH;

export type DeviceField = 'email' | 'emailConfirm' | 'kind';
/** A problem with one field: an i18n key under devices:errors and its params. */
export interface FieldProblem {
  key: string;
  params?: Record<string, string | number>;
}
export type FieldProblems = Partial<Record<DeviceField, FieldProblem>>;

export interface DeviceForm {
  email: string;
  emailConfirm: string;
  kind: string;
}

export interface CheckedDevice {
  email: string;
  kind: DeviceKind;
}

/** Who asked for a change: the signed-in user, from this IP, reading this language. */
export interface DeviceRequest {
  ip: string | null;
  locale: Locale;
}

/** A rule of the contract or of the account's devices; the page shows the key's message. */
export class DeviceRuleError extends AppError {
  constructor(messageKey: string, params: Record<string, string | number> = {}, status = 409) {
    super('device_rule', status, messageKey, params, '/account/');
  }
}

export type ProofResult =
  | { result: 'ok'; device: Device; op: 'added' | 'changed' }
  | { result: 'wrong'; attemptsLeft: number }
  | { result: 'expired' }
  | { result: 'none' }
  | { result: 'exhausted' };

export const proofPurpose = (deviceId: string) => `device_verify:${deviceId}`;

/**
 * The account area's device rules (manual appendices 1 and 3): add, change and delete a device, and
 * prove a new address with a code mailed to it before it receives any login code. Every change is an
 * account event and a notice to the account's proven addresses.
 */
export class DeviceService {
  constructor(
    private readonly deps: {
      devices: DeviceRepository;
      otp: OtpService;
      events: AccountEventService;
      mail: MailQueue;
      limits: RateLimits;
      otpTtlSeconds: number;
      resendCooldownSeconds: number;
      /**
       * Revokes a deleted device's client certificate (it is then listed in the CRL), and issues one
       * naming a newly proven address when the account signs in with certificates.
       */
      certificates?: {
        revokeDetached(accountId: string, reason: 'device_deleted'): Promise<number>;
        issue(accountId: string, deviceId: string): Promise<unknown>;
      };
    },
  ) {}

  /** Whether another device may be added under the contract. */
  canAdd(account: AccountWithDevices, contract: Contract): boolean {
    return account.devices.length < contract.max_devices;
  }

  /**
   * Checks the form of 追加 (and of 変更 with `device`): address given twice alike, well formed, not one
   * of the account's other addresses; kind one of the three. Returns the clean values or the problems.
   */
  check(account: AccountWithDevices, form: DeviceForm, device?: Device): { ok: true; value: CheckedDevice } | { ok: false; problems: FieldProblems } {
    const problems: FieldProblems = {};
    const email = form.email.trim();
    const confirm = form.emailConfirm.trim();
    if (!email) problems.email = { key: 'devices:errors.email_required' };
    else if (!isEmailAddress(email)) problems.email = { key: 'devices:errors.email_format' };
    else if (account.devices.some((d) => d.id !== device?.id && [d.email, d.pendingEmail].some((a) => a?.toLowerCase() === email.toLowerCase())))
      problems.email = { key: 'devices:errors.email_taken' };
    if (!confirm) problems.emailConfirm = { key: 'devices:errors.confirm_required' };
    else if (!problems.email && confirm.toLowerCase() !== email.toLowerCase()) problems.emailConfirm = { key: 'devices:errors.confirm_mismatch' };
    if (!(DEVICE_KINDS as readonly string[]).includes(form.kind)) problems.kind = { key: 'devices:errors.kind_required' };
    if (Object.keys(problems).length) return { ok: false, problems };
    return { ok: true, value: { email, kind: form.kind as DeviceKind } };
  }

  /** What a change would do: a new address to prove, a new kind, or nothing at all. */
  changeOf(device: Device, value: CheckedDevice): { newAddress: boolean; newKind: boolean; backToCurrent: boolean } {
    const current = proofTarget(device) ?? device.email;
    const newAddress = value.email.toLowerCase() !== current.toLowerCase() && value.email.toLowerCase() !== device.email.toLowerCase();
    // Typing the proven address again while another waits: the pending one is dropped.
    const backToCurrent = !!device.pendingEmail && value.email.toLowerCase() === device.email.toLowerCase();
    return { newAddress, newKind: value.kind !== device.kind, backToCurrent };
  }

  /** 追加 → 登録: the device is created unproven and a code goes to its address. */
  async add(account: AccountWithDevices, contract: Contract, value: CheckedDevice, req: DeviceRequest): Promise<Device> {
    if (!this.canAdd(account, contract)) throw new DeviceRuleError('devices:errors.too_many', { max: contract.max_devices });
    await this.limitMail(value.email);
    const id = randomUUID();
    const { code, stored } = this.newCode(id, value.email);
    const out = await this.deps.devices.addUnproven({ id, accountId: account.id, email: value.email, kind: value.kind, maxDevices: contract.max_devices, code: stored });
    if (!out.ok) throw out.reason === 'too_many' ? new DeviceRuleError('devices:errors.too_many', { max: contract.max_devices }) : new DeviceRuleError('devices:errors.email_taken', {}, 400);
    await this.sendCode(account, out.device, value.email, code, stored, req.locale);
    await this.record(account, 'device_added', req, out.device, { email: value.email, kind: value.kind, verification: 'started' });
    await this.notify(account, req, 'added', out.device, value.email);
    return out.device;
  }

  /**
   * 変更 → 登録: the kind changes at once; a new address waits (pendingEmail) for its code while the
   * old one keeps working. Returns whether a proof is now needed.
   */
  async change(account: AccountWithDevices, device: Device, value: CheckedDevice, req: DeviceRequest): Promise<{ device: Device; needsProof: boolean }> {
    const what = this.changeOf(device, value);
    if (!what.newAddress && !what.newKind && !what.backToCurrent) throw new DeviceRuleError('devices:errors.nothing_changed', {}, 400);
    let code: string | undefined;
    let stored: NewDeviceCode | undefined;
    if (what.newAddress) {
      await this.limitMail(value.email);
      ({ code, stored } = this.newCode(device.id, value.email));
    }
    const out = await this.deps.devices.change({
      accountId: account.id,
      deviceId: device.id,
      kind: value.kind,
      pendingEmail: what.newAddress ? value.email : undefined,
      code: stored,
      dropPending: what.backToCurrent ? { purpose: proofPurpose(device.id) } : undefined,
    });
    if (!out.ok) throw out.reason === 'taken' ? new DeviceRuleError('devices:errors.email_taken', {}, 400) : new DeviceRuleError('devices:errors.not_found', {}, 404);
    if (code && stored) await this.sendCode(account, out.device, value.email, code, stored, req.locale);
    await this.record(account, 'device_changed', req, out.device, {
      kind: value.kind,
      previousKind: device.kind,
      pendingEmail: what.newAddress ? value.email : null,
      ...(what.newAddress ? { verification: 'started' } : {}),
    });
    await this.notify(account, req, 'changed', out.device, what.newAddress ? value.email : out.device.email);
    return { device: out.device, needsProof: what.newAddress || !!proofTarget(out.device) };
  }

  /** Seconds before another code may be sent for the device's proof (0: now). */
  async resendWait(account: AccountWithDevices, device: Device): Promise<number> {
    const latest = await this.deps.devices.latestCode(account.id, proofPurpose(device.id));
    if (!latest) return 0;
    const wait = latest.createdAt.getTime() + this.deps.resendCooldownSeconds * 1000 - Date.now();
    return wait > 0 ? Math.ceil(wait / 1000) : 0;
  }

  /** Whether the current code's mail was given up: refused for good, or not out before the code expired. */
  async undelivered(account: AccountWithDevices, device: Device): Promise<boolean> {
    const latest = await this.deps.devices.latestCode(account.id, proofPurpose(device.id));
    return !!latest?.deliveryFailedAt && !latest.consumedAt;
  }

  /** When the current code runs out, if there is one. */
  async codeExpiry(account: AccountWithDevices, device: Device): Promise<Date | null> {
    const latest = await this.deps.devices.latestCode(account.id, proofPurpose(device.id));
    return latest && !latest.consumedAt ? latest.expiresAt : null;
  }

  /** A new code for the running proof (the cooldown and the per-address mail limit apply). */
  async resend(account: AccountWithDevices, device: Device, req: DeviceRequest, backUrl: string): Promise<void> {
    const target = proofTarget(device);
    if (!target) throw new DeviceRuleError('devices:errors.nothing_to_prove', {}, 400);
    const wait = await this.resendWait(account, device);
    if (wait > 0) throw new RateLimitedError(wait, backUrl);
    await this.limitMail(target, backUrl);
    const { code, stored } = this.newCode(device.id, target);
    const again = await this.deps.devices.resendCode({ accountId: account.id, deviceId: device.id, code: stored });
    if (!again) throw new DeviceRuleError('devices:errors.nothing_to_prove', {}, 400);
    await this.sendCode(account, again, target, code, stored, req.locale);
  }

  /** Checks a proof code; the right one makes the address active (and, for a change, replaces the old one). */
  async prove(account: AccountWithDevices, device: Device, submitted: string, req: DeviceRequest): Promise<ProofResult> {
    const purpose = proofPurpose(device.id);
    const out = await this.deps.devices.checkCode({
      accountId: account.id,
      tenantId: account.tenantId,
      deviceId: device.id,
      purpose,
      maxFailures: DEVICE_PROOF_MAX_ATTEMPTS,
      sourceIp: req.ip,
      matches: (codeHmac, target) => {
        const candidate = Buffer.from(this.deps.otp.hmac(bound(purpose, target), submitted), 'hex');
        const expected = Buffer.from(codeHmac, 'hex');
        return candidate.length === expected.length && timingSafeEqual(candidate, expected);
      },
    });
    switch (out.result) {
      case 'ok': {
        const op = out.before.verifiedAt ? 'changed' : 'added';
        await this.record(account, 'device_verified', req, out.device, { email: out.device.email, previousEmail: out.before.verifiedAt ? out.before.email : null });
        // A certificate names its device's address: a new or changed address gets a new certificate
        // (issuing revokes the previous one), shown with its download password in the device table.
        if (METHOD_FACTORS[account.loginMethod as LoginMethod]?.includes('client_certificate')) await this.deps.certificates?.issue(account.id, out.device.id);
        // The new address is told along with the others; the old one too, as it just stopped working.
        await this.notify(account, req, 'verified', out.device, out.device.email, out.before.verifiedAt ? [out.before.email] : [], out.device.id);
        return { result: 'ok', device: out.device, op };
      }
      case 'wrong':
        return { result: 'wrong', attemptsLeft: DEVICE_PROOF_MAX_ATTEMPTS - out.failures };
      case 'exhausted': {
        const type: AccountEventType = out.before.verifiedAt ? 'device_changed' : 'device_deleted';
        await this.record(account, type, req, out.before, { reason: 'too_many_attempts', email: proofTarget(out.before) });
        await this.notify(account, req, 'gave_up', out.before, proofTarget(out.before) ?? out.before.email);
        return { result: 'exhausted' };
      }
      default:
        return out;
    }
  }

  /** 取り消し of a running proof: an unproven device is removed, a pending address dropped. */
  async cancel(account: AccountWithDevices, device: Device, req: DeviceRequest): Promise<void> {
    const gone = await this.deps.devices.cancelProof({ accountId: account.id, deviceId: device.id, purpose: proofPurpose(device.id) });
    if (!gone) throw new DeviceRuleError('devices:errors.nothing_to_prove', {}, 400);
    const type: AccountEventType = gone.verifiedAt ? 'device_changed' : 'device_deleted';
    await this.record(account, type, req, gone, { reason: 'cancelled', email: proofTarget(gone) });
    await this.notify(account, req, 'cancelled', gone, proofTarget(gone) ?? gone.email);
  }

  /** Why a device may not be deleted (the last one, or the last proven one), else undefined. */
  deleteProblem(account: AccountWithDevices, device: Device): string | undefined {
    if (account.devices.length <= 1) return 'devices:errors.last_device';
    if (device.verifiedAt && account.devices.filter((d) => d.verifiedAt).length <= 1) return 'devices:errors.last_proven_device';
    return undefined;
  }

  /** 削除: the address stops receiving login codes at once (codes already mailed stop working). */
  async remove(account: AccountWithDevices, device: Device, req: DeviceRequest): Promise<Device> {
    const out = await this.deps.devices.remove({ accountId: account.id, deviceId: device.id, purpose: proofPurpose(device.id) });
    if (!out.ok) {
      if (out.reason === 'not_found') throw new DeviceRuleError('devices:errors.not_found', {}, 404);
      throw new DeviceRuleError(out.reason === 'last' ? 'devices:errors.last_device' : 'devices:errors.last_proven_device');
    }
    // The device row is gone (its certificates lost their device); record why they are revoked.
    await this.deps.certificates?.revokeDetached(account.id, 'device_deleted');
    await this.record(account, 'device_deleted', req, out.device, { email: out.device.email, kind: out.device.kind });
    // The removed address hears of it too: if it wasn't its owner's doing, they should know.
    await this.notify(account, req, 'deleted', out.device, out.device.email, out.device.verifiedAt ? [out.device.email] : [], out.device.id);
    return out.device;
  }

  private newCode(deviceId: string, address: string): { code: string; stored: NewDeviceCode } {
    const code = this.deps.otp.generateCode();
    const purpose = proofPurpose(deviceId);
    // The HMAC binds the code to the address it was mailed to: it proves that address and no other.
    return { code, stored: { id: randomUUID(), purpose, codeHmac: this.deps.otp.hmac(bound(purpose, address), code), expiresAt: new Date(Date.now() + this.deps.otpTtlSeconds * 1000) } };
  }

  /** Caps the mails one address gets from proofs, whoever asks (no mail bombing through 追加). */
  private async limitMail(address: string, backUrl?: string) {
    const d = await this.deps.limits.consume('otp_mail', `device_proof:${address.toLowerCase()}`);
    if (!d.allowed) throw new RateLimitedError(d.retryAfterSeconds, backUrl);
  }

  /**
   * The proof code's mail: tried until the code expires; given up (a permanent refusal, or the code
   * expired first), it marks the code, and the code page says so (undelivered).
   */
  private sendCode(account: AccountWithDevices, device: Device, address: string, code: string, stored: NewDeviceCode, locale: Locale) {
    return this.deps.mail.enqueue({
      to: [address],
      template: 'device-verify',
      locale,
      params: { userId: account.userId, otp: code, expiresMinutes: String(Math.round(this.deps.otpTtlSeconds / 60)), number: String(device.number) },
      deliverBy: stored.expiresAt,
      otpId: stored.id,
      tenantId: account.tenantId,
    });
  }

  private async record(account: AccountWithDevices, type: AccountEventType, req: DeviceRequest, device: Device, detail: Record<string, string | number | boolean | null>) {
    await this.deps.events.record({ tenantId: account.tenantId, accountId: account.id, type, actor: 'user', sourceIp: req.ip, detail: { deviceId: device.id, number: device.number, ...detail } });
  }

  /**
   * The 'devices-changed' notice to the account's proven addresses as they are now, plus `extra` (an
   * address that just left). `without` names a device whose stale row in `account` must be ignored.
   */
  private async notify(account: AccountWithDevices, req: DeviceRequest, action: string, device: Device, address: string, extra: string[] = [], without?: string) {
    const t = translator(req.locale);
    const now = account.devices.filter((d) => d.id !== without);
    const proven = deliverableAddresses({ ...account, devices: action === 'verified' ? [...now, device] : now });
    const to = [...new Set([...proven, ...extra])];
    if (to.length === 0) return;
    await this.deps.mail.enqueue({
      to,
      template: 'devices-changed',
      locale: req.locale,
      params: {
        userId: account.userId,
        action: t(`devices:mail_action.${action}`),
        device: t('devices:mail_device', { number: device.number, kind: t(`devices:kinds.${device.kind}`), email: address }),
        time: new Date().toISOString().slice(0, 19).replace('T', ' ') + ' UTC',
        ip: req.ip ?? '-',
      },
      tenantId: account.tenantId,
    });
  }
}

/** The HMAC input of a proof code: the purpose and the address, so a code proves one address only. */
function bound(purpose: string, address: string): string {
  return `${purpose}\0${address.toLowerCase()}`;
}
