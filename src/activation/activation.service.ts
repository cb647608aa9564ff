import { timingSafeEqual } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { isEmailAddress } from '../mail/email-address.js';
import type { TenantDirectory } from '../config/index.js';
import type { AccountEventService } from '../account/account-event.service.js';
import type { AccountLifecycleService } from '../account/account-lifecycle.service.js';
import type { CertificateService, IssuedCertificate } from '../certificates/certificate.service.js';
import { lockNotice, type LockoutService } from '../lockout/lockout.service.js';
import type { Locale } from '../i18n/index.js';
import type { MailQueue } from '../mail/mail.types.js';
import type { OtpService } from '../otp/otp.service.js';
import type { PasskeyService } from '../passkey/passkey.service.js';
import type { PublicKeyCredentialCreationOptionsJSON } from '@simplewebauthn/server';
import type { AccountRepository, AccountWithDevices } from '../persistence/account.repository.js';
import type { OneTimePasswordRepository } from '../persistence/one-time-password.repository.js';
import { hashSecret, normalizeAnswer } from '../credentials/hashing.js';
import { checkPassword, type PasswordProblem } from '../credentials/password-policy.js';
import { METHOD_FACTORS } from '../login/login-methods.js';
import type { LoginMethod } from '../config/index.js';
import { deliverableAddresses } from '../login/factors/email-otp.factor.js';
import type { SecretQuestion } from '../config/index.js';
import { isLocked } from '../lockout/account-lock.js';
import { DEFAULT_LOCKOUT_THRESHOLD } from '../config/tenants.js';

export const ACTIVATION_PURPOSE = 'activation';
/** Longest secret answer accepted, counted after normalisation. */
export const SECRET_ANSWER_MAX = 100;

export interface IssuedActivation {
  url: string;
  otp: string;
  expiresAt: Date;
}

/** A certificate activation issued for one device (password_certificate), with its download password. */
export interface ActivationCertificate {
  deviceNumber: number;
  email: string;
  notAfter: Date;
  downloadPassword: string;
}

export type ActivationCheck =
  | { ok: true; account: AccountWithDevices; otpId: string }
  | { ok: false; reason: 'mismatch' | 'expired' }
  /** `byCode`: wrong codes of this activation locked it (else a lock from before, e.g. wrong passwords). */
  | { ok: false; reason: 'locked'; byCode: boolean; lockedUntil: Date | null };

export type RegistrationProblem = { field: 'questionId' | 'answer' | 'password'; problem: 'required' | 'unknown_question' | 'too_long' | PasswordProblem };

export interface Actor {
  actor: 'user' | 'admin' | 'api';
  ip?: string | null;
}

/**
 * First-time authentication (初回認証 → 認証情報登録 → 認証情報登録完了): an activation code the
 * site hands out (or that is mailed), valid for days, single use, stored as an HMAC; then the
 * secret question and, for password methods, a password, or for passkey methods, a passkey.
 */
export class ActivationService {
  constructor(
    private readonly deps: {
      accounts: AccountRepository;
      lifecycle: Pick<AccountLifecycleService, 'endAccess'>;
      certificates: Pick<CertificateService, 'issue'>;
      otpRepo: OneTimePasswordRepository;
      otp: OtpService;
      passkeys: Pick<PasskeyService, 'registrationOptions' | 'register'>;
      lockout: LockoutService;
      events: AccountEventService;
      mail: MailQueue;
      tenants: TenantDirectory;
      issuer: string;
      ttlSeconds: number;
      passwordMinLength: number;
      secretQuestions: SecretQuestion[];
    },
  ) {}

  activationUrl(tenantId: string, userId: string): string {
    return `${this.deps.issuer}/activation/${encodeURIComponent(tenantId)}?user=${encodeURIComponent(userId)}`;
  }

  /** Whether the account's login method needs a password to be set at activation. */
  needsPassword(account: Pick<AccountWithDevices, 'loginMethod'>): boolean {
    return (METHOD_FACTORS[account.loginMethod as LoginMethod] ?? []).includes('password');
  }

  /** Whether the account's login method has a passkey step: a passkey is registered at activation (instead of a password). */
  needsPasskey(account: Pick<AccountWithDevices, 'loginMethod'>): boolean {
    return (METHOD_FACTORS[account.loginMethod as LoginMethod] ?? []).includes('passkey');
  }

  /** Options for the activation's passkey ceremony; `binding` names the verified activation code. */
  passkeyOptions(account: AccountWithDevices, binding: string): Promise<PublicKeyCredentialCreationOptionsJSON> {
    return this.deps.passkeys.registrationOptions(account, binding);
  }

  /**
   * Step 2's passkey (passkey methods): verifies and stores it before the activation completes, so an
   * account never becomes active without one. BadRequestError (the user's language) when it fails.
   */
  async registerPasskey(account: AccountWithDevices, binding: string, raw: unknown, name: string, who: Actor): Promise<void> {
    const passkey = await this.deps.passkeys.register(account, binding, raw, { name, deviceId: null });
    await this.deps.events.record({
      tenantId: account.tenantId,
      accountId: account.id,
      type: 'passkey_registered',
      actor: who.actor,
      sourceIp: who.ip ?? null,
      detail: { passkey: passkey.id, name: passkey.name, via: 'activation' },
    });
  }

  /** Whether the account's login method needs its devices' client certificates, issued at activation. */
  needsCertificates(account: Pick<AccountWithDevices, 'loginMethod'>): boolean {
    return (METHOD_FACTORS[account.loginMethod as LoginMethod] ?? []).includes('client_certificate');
  }

  /**
   * Issues a fresh activation code (the old one stops working) and puts the account back to waiting
   * for activation. With `mail`, the URL and code go to the account's device addresses. An account
   * that was active loses its sessions and tokens: it has to prove itself again.
   */
  async issue(account: AccountWithDevices, opts: Actor & { mail?: boolean; locale?: Locale }): Promise<IssuedActivation> {
    const otp = this.deps.otp.generateCode();
    const expiresAt = new Date(Date.now() + this.deps.ttlSeconds * 1000);
    await this.deps.otpRepo.issueForAccount({ accountId: account.id, purpose: ACTIVATION_PURPOSE, codeHmac: this.deps.otp.hmac(ACTIVATION_PURPOSE, otp), expiresAt });
    if (account.status !== 'pending_activation') {
      await this.deps.accounts.markPendingActivation(account.id);
      await this.deps.lifecycle.endAccess(account.id, 'reactivated');
    }
    const url = this.activationUrl(account.tenantId, account.userId);
    await this.deps.events.record({ tenantId: account.tenantId, accountId: account.id, type: 'activation_issued', actor: opts.actor, sourceIp: opts.ip ?? null, detail: { mailed: !!opts.mail } });
    if (opts.mail) {
      const to = account.devices.map((d) => d.email).filter(isEmailAddress); // the mail layer refuses the rest
      if (to.length)
        await this.deps.mail.enqueue({
          to: [...new Set(to)],
          template: 'activation',
          locale: opts.locale ?? 'ja',
          params: { userId: account.userId, url, otp, expiresAt: expiresAt.toISOString().slice(0, 16).replace('T', ' ') + ' UTC', siteName: this.siteName(account.tenantId) },
          deliverBy: expiresAt,
          tenantId: account.tenantId,
        });
    }
    return { url, otp, expiresAt };
  }

  private siteName(tenantId: string): string {
    return this.deps.tenants.tenant(tenantId)?.name ?? tenantId;
  }

  /**
   * Step 1 (初回認証): checks the user ID and activation code. Anything that is not a waiting account
   * with this code answers "mismatch", so the page reveals nothing; wrong codes count towards the lock.
   */
  async verify(tenantId: string, userId: string, code: string, locale: Locale = 'ja'): Promise<ActivationCheck> {
    const account = await this.deps.accounts.findByUserId(tenantId, userId);
    const latest = account ? await this.deps.otpRepo.latestForAccount(account.id, ACTIVATION_PURPOSE) : null;
    const candidate = Buffer.from(this.deps.otp.hmac(ACTIVATION_PURPOSE, code), 'hex');
    const expected = Buffer.from(latest?.codeHmac ?? this.deps.otp.hmac(ACTIVATION_PURPOSE, ''), 'hex');
    const same = timingSafeEqual(candidate, expected);
    if (!account || account.status !== 'pending_activation') return { ok: false, reason: 'mismatch' };
    if (account.lockedAt && isLocked(account))
      return { ok: false, reason: 'locked', byCode: !!latest && account.lockedAt >= latest.createdAt, lockedUntil: account.lockedUntil };
    if (!latest || !same || latest.consumedAt) {
      const lockout = this.deps.tenants.tenant(tenantId)?.contract.lockout ?? { threshold: DEFAULT_LOCKOUT_THRESHOLD, duration_minutes: null };
      const failure = await this.deps.lockout.registerFailure(account.id, lockout);
      if (failure.locked && failure.justLocked) {
        const to = deliverableAddresses(account);
        if (to.length) await this.deps.mail.enqueue(lockNotice(to, { userId: account.userId, clientName: this.siteName(tenantId), locale, lockedUntil: failure.lockedUntil, tenantId }));
      }
      return failure.locked ? { ok: false, reason: 'locked', byCode: true, lockedUntil: failure.lockedUntil } : { ok: false, reason: 'mismatch' };
    }
    if (latest.expiresAt.getTime() <= Date.now()) return { ok: false, reason: 'expired' };
    return { ok: true, account, otpId: latest.id };
  }

  /**
   * After complete() answered false: whether the account became active meanwhile (another submission
   * of the same code completed it), waiting up to about two seconds for that submission to finish.
   */
  async completedMeanwhile(accountId: string): Promise<boolean> {
    for (let i = 0; i < 100; i++) {
      const account = await this.deps.accounts.findById(accountId);
      if (account?.status !== 'pending_activation') return account?.status === 'active';
      await sleep(20);
    }
    return false;
  }

  questionsFor(locale: Locale): Array<{ id: string; text: string }> {
    return this.deps.secretQuestions.map((q) => ({ id: q.id, text: q[locale] }));
  }

  /**
   * The secret question and answer rules, shared by activation and the account area's change page.
   * Returns the first problem, or undefined.
   */
  checkSecretAnswer(input: { questionId?: string; answer?: string }): RegistrationProblem | undefined {
    if (!input.questionId) return { field: 'questionId', problem: 'required' };
    if (!this.deps.secretQuestions.some((q) => q.id === input.questionId)) return { field: 'questionId', problem: 'unknown_question' };
    const answer = normalizeAnswer(input.answer ?? '');
    if (!answer) return { field: 'answer', problem: 'required' };
    if (answer.length > SECRET_ANSWER_MAX) return { field: 'answer', problem: 'too_long' };
    return undefined;
  }

  /** Checks step 2's input; returns the first problem, or undefined when it can be saved. */
  checkRegistration(account: AccountWithDevices, input: { questionId?: string; answer?: string; password?: string; confirm?: string }): RegistrationProblem | undefined {
    const answerProblem = this.checkSecretAnswer(input);
    if (answerProblem) return answerProblem;
    if (this.needsPassword(account)) {
      if (!input.password) return { field: 'password', problem: 'required' };
      const problem = checkPassword(input.password, input.confirm ?? '', { minLength: this.deps.passwordMinLength, userId: account.userId });
      if (problem) return { field: 'password', problem };
    }
    return undefined;
  }

  /**
   * Step 2 (認証情報登録): saves the secret question (and password), consumes the activation code and
   * activates the account; a certificate method's devices get their certificates (the completion page
   * shows the download passwords). Undefined when the code was used or retired meanwhile.
   */
  async complete(
    account: AccountWithDevices,
    otpId: string,
    input: { questionId: string; answer: string; password?: string },
    who: Actor & { locale?: Locale },
  ): Promise<{ certificates: ActivationCertificate[] } | undefined> {
    if (!(await this.deps.otpRepo.consume(otpId))) return undefined;
    await this.deps.accounts.activate(account.id, {
      secretQuestionId: input.questionId,
      secretAnswerHash: await hashSecret(normalizeAnswer(input.answer)),
      passwordHash: this.needsPassword(account) && input.password ? await hashSecret(input.password) : null,
    });
    const certificates: ActivationCertificate[] = [];
    if (this.needsCertificates(account)) {
      // Every device gets a new certificate; issuing one retires the device's previous one.
      for (const device of account.devices) {
        const issued: IssuedCertificate = await this.deps.certificates.issue(account.id, device.id);
        certificates.push({ deviceNumber: device.number, email: device.email, notAfter: issued.certificate.notAfter, downloadPassword: issued.downloadPassword });
      }
    }
    await this.deps.events.record({ tenantId: account.tenantId, accountId: account.id, type: 'activation_completed', actor: who.actor, sourceIp: who.ip ?? null });
    const to = deliverableAddresses(account);
    if (to.length)
      await this.deps.mail.enqueue({ to, template: 'activation-completed', locale: who.locale ?? 'ja', params: { userId: account.userId, siteName: this.siteName(account.tenantId) }, tenantId: account.tenantId });
    return { certificates };
  }
}
