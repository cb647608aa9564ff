import type { AccountEventService } from '../account/account-event.service.js';
import type { AccountLifecycleService } from '../account/account-lifecycle.service.js';
import type { ActivationService } from '../activation/activation.service.js';
import type { AppConfig, ClientConfig, LoginMethod, Tenant, TenantDirectory } from '../config/index.js';
import { upgradeWeakHash } from '../credentials/hash-upgrade.js';
import { hashSecret, normalizeAnswer, verifySecret } from '../credentials/hashing.js';
import { checkPassword, PASSWORD_MAX_LENGTH } from '../credentials/password-policy.js';
import type { LoginEventService, LoginResult } from '../history/login-event.service.js';
import { AppError, RateLimitedError, SessionExpiredError } from '../http/errors.js';
import { PASSKEY_NAME_MAX, type PasskeyService } from '../passkey/passkey.service.js';
import type { RateLimits } from '../http/rate-limit.js';
import { translator, type Locale } from '../i18n/index.js';
import { lockNotice, type LockoutService } from '../lockout/lockout.service.js';
import { deliverableAddresses, issueMailedCode, normalizeOtp } from '../login/factors/email-otp.factor.js';
import { USER_ID_MAX, normalizeUserId, type RequestInfo } from '../login/login-flow.service.js';
import { NotActivatedError } from '../login/login-errors.js';
import { METHOD_FACTORS, effectiveMethod } from '../login/login-methods.js';
import type { Logger } from '../logger.js';
import type { MailQueue } from '../mail/mail.types.js';
import type { OtpService } from '../otp/otp.service.js';
import type { AccountRepository, AccountWithDevices } from '../persistence/account.repository.js';
import type { LoginFlow, LoginFlowRepository } from '../persistence/login-flow.repository.js';
import { RecoveryFieldError, RecoveryLockedError, RecoveryStepError, RecoveryUnavailableError } from './recovery-errors.js';
import { isLocked } from '../lockout/account-lock.js';

/** OTP purpose of recovery codes: a login code can never pass for one, nor the reverse. */
export const RECOVERY_OTP_PURPOSE = 'recovery';
/** Recovery flows share the login flows' table, keyed next to the interaction's own login flow. */
export const recoveryFlowKey = (interactionUid: string) => `${interactionUid}:recovery`;
/** `method` of the login events recovery records, so the history tells them from login attempts. */
export const RECOVERY_EVENT_METHOD = 'recovery';
/** Longest answer accepted (activation refuses to register longer ones). */
export const ANSWER_MAX = 100;

export type RecoveryState = 'identify' | 'code' | 'question' | 'password' | 'passkey' | 'done:password' | 'done:passkey' | 'done:activation';
/** The pages of the flow, in order (the step indicator shows them all). */
export const RECOVERY_STEPS = ['identify', 'code', 'question', 'password', 'done'] as const;
/**
 * Every page's step: a passkey method's account registers a new passkey where others set a password
 * (the step indicator shows it in the password's place, 再設定).
 */
export const RECOVERY_PAGES = [...RECOVERY_STEPS, 'passkey'] as const;
export type RecoveryStep = (typeof RECOVERY_PAGES)[number];
export type RecoveryOutcome = 'password' | 'passkey' | 'activation';
/** Login-history results recovery adds to the login's own. */
export type RecoveryResult = LoginResult | 'wrong_answer';

export function stepOf(state: string): RecoveryStep {
  if (state === 'done:password' || state === 'done:passkey' || state === 'done:activation') return 'done';
  if ((RECOVERY_PAGES as readonly string[]).includes(state)) return state as RecoveryStep;
  // A state this version doesn't know (or a login flow's): start over rather than guess.
  return 'identify';
}

export type RecoveryView =
  | { step: 'identify' }
  | { step: 'code'; userId: string; otpLength: number; otpMinutes: number }
  /**
   * `question` is null when the account has none registered, or when it signs in with a passkey and
   * the contract has no passkey recovery (`unavailable: 'passkey'`): the page says to contact the site.
   */
  | { step: 'question'; userId: string; question: string | null; unavailable?: 'passkey' }
  | { step: 'password'; userId: string; minLength: number }
  /** `options`: the registration ceremony's options as JSON. */
  | { step: 'passkey'; userId: string; options: string; nameMax: number }
  | { step: 'done'; outcome: RecoveryOutcome };

type Settings = Pick<AppConfig, 'otp' | 'loginFlowTtlSeconds' | 'passwordMinLength' | 'secretQuestions' | 'revealUnknownUser'>;

/**
 * Recovery of lost access (the secret question's purpose: 認証情報をお忘れの際に確認する). A state
 * machine persisted like the login flow, so every step is checked against the state on the server:
 *
 * ```
 * identify --user ID, code mailed--> code --right code--> question --right answer--+--> password --new password--> done:password
 *                                                                                 +--> passkey --new passkey--> done:passkey
 *                                                                                 +--> done:activation (fresh activation mailed)
 * ```
 * Wrong codes and wrong answers count towards the account's lockout shared with the login. Unknown,
 * pending and locked accounts walk the same pages without mail, as in the login.
 */
export class RecoveryService {
  constructor(
    private readonly deps: {
      flows: LoginFlowRepository;
      accounts: AccountRepository;
      loginEvents: Pick<LoginEventService, 'record'>;
      accountEvents: AccountEventService;
      lockout: LockoutService;
      lifecycle: Pick<AccountLifecycleService, 'endAccess'>;
      limits: RateLimits;
      mail: MailQueue;
      otp: OtpService;
      activation: ActivationService;
      tenants: TenantDirectory;
      config: Settings;
      logger: Pick<Logger, 'error' | 'warn'>;
      passkeys: Pick<PasskeyService, 'registrationOptions' | 'register'>;
    },
  ) {}

  private clientOf(clientId: string): { tenant: Tenant; client: ClientConfig } {
    const found = this.deps.tenants.client(clientId);
    if (!found) throw new SessionExpiredError();
    return found;
  }

  /** The interaction's recovery flow, created on first sight. */
  async begin(interactionUid: string, clientId: string): Promise<LoginFlow> {
    const { tenant } = this.clientOf(clientId);
    const flow = await this.deps.flows.findOrCreate({
      interactionUid: recoveryFlowKey(interactionUid),
      tenantId: tenant.id,
      clientId,
      expiresAt: new Date(Date.now() + this.deps.config.loginFlowTtlSeconds * 1000),
    });
    if (flow.expiresAt.getTime() <= Date.now() || flow.clientId !== clientId) throw new SessionExpiredError();
    return flow;
  }

  /** What the page of the flow's current step shows. */
  async view(flow: LoginFlow, locale: Locale): Promise<RecoveryView> {
    const step = stepOf(flow.state);
    const userId = flow.submittedUserId ?? '';
    switch (step) {
      case 'identify':
        return { step };
      case 'code':
        return { step, userId, otpLength: this.deps.config.otp.length, otpMinutes: Math.round(this.deps.config.otp.ttlSeconds / 60) };
      case 'question': {
        const account = await this.account(flow);
        if (this.passkeyRecoveryRefused(account, flow)) return { step, userId, question: null, unavailable: 'passkey' };
        return { step, userId, question: this.questionOf(account, locale) };
      }
      case 'password':
        return { step, userId, minLength: this.deps.config.passwordMinLength };
      case 'passkey': {
        const account = await this.account(flow);
        const options = await this.deps.passkeys.registrationOptions(account, this.passkeyBinding(flow));
        return { step, userId, options: JSON.stringify(options).replace(/</g, '\\u003c'), nameMax: PASSKEY_NAME_MAX };
      }
      case 'done':
        return { step, outcome: flow.state === 'done:password' ? 'password' : flow.state === 'done:passkey' ? 'passkey' : 'activation' };
    }
  }

  /** Step 1: the user ID. Moves to the code step and mails a code to the account's proven addresses. */
  async identify(flow: LoginFlow, rawUserId: unknown, req: RequestInfo, backUrl: string): Promise<void> {
    this.expect(flow, 'identify', backUrl);
    const userId = normalizeUserId(rawUserId);
    if (!userId) throw new RecoveryFieldError('userId', 400, 'recovery:errors.user_id_required');
    if (userId.length > USER_ID_MAX) throw new RecoveryFieldError('userId', 400, 'recovery:errors.user_id_too_long', { max: USER_ID_MAX });
    const { tenant, client } = this.clientOf(flow.clientId);
    const account = await this.deps.accounts.findByUserId(tenant.id, userId);
    const named = { ...flow, submittedUserId: userId };

    if (this.deps.config.revealUnknownUser) {
      if (!account) {
        await this.event(named, req, 'unknown_user', null);
        throw new RecoveryFieldError('userId', 400, 'recovery:errors.otp_not_sent');
      }
      if (account.status === 'pending_activation') {
        // Same answer as the login: the activation URL is the way in, and says no more than the login does.
        await this.event(named, req, 'not_activated', account.id);
        throw new NotActivatedError(backUrl);
      }
    }

    const method: LoginMethod = account ? effectiveMethod(account.loginMethod, tenant.contract) : (tenant.contract.login_methods[0] ?? 'otp');
    const data = { accountId: account?.id ?? null, submittedUserId: userId, method, completedFactors: [], state: 'code' satisfies RecoveryState };
    if (!(await this.deps.flows.transition(flow.id, 'identify', data))) throw new RecoveryStepError(backUrl);
    await this.sendCode({ ...flow, ...data }, account, tenant, client, req.locale, backUrl);
  }

  /** Mails the code step's code again, once the resend cool-down has passed. */
  async resend(flow: LoginFlow, req: RequestInfo, backUrl: string): Promise<void> {
    this.expect(flow, 'code', backUrl);
    const wait = await this.deps.otp.resendWait(flow.id, RECOVERY_OTP_PURPOSE);
    if (wait > 0) throw new RecoveryFieldError('otp', 400, 'recovery:errors.resend_wait', { seconds: wait });
    const { tenant, client } = this.clientOf(flow.clientId);
    const account = flow.accountId ? await this.deps.accounts.findById(flow.accountId) : null;
    await this.sendCode(flow, account, tenant, client, req.locale, backUrl);
  }

  /**
   * A code whose mail was given up (or could not even be queued): back to the user ID step, which says
   * 「ワンタイムパスワードが送信できませんでした」 instead of leaving the user waiting for it.
   */
  async assertCodeDelivered(flow: LoginFlow): Promise<void> {
    if (stepOf(flow.state) !== 'code' || !(await this.deps.otp.deliveryFailed(flow.id, RECOVERY_OTP_PURPOSE))) return;
    await this.restart(flow);
    throw new RecoveryFieldError('userId', 400, 'recovery:errors.otp_not_sent');
  }

  /** Back to the user ID page (another ID, or a fresh start). */
  async restart(flow: LoginFlow): Promise<void> {
    await this.deps.flows.update(flow.id, { state: 'identify' satisfies RecoveryState, accountId: null, submittedUserId: null, method: null, completedFactors: [] });
  }

  /**
   * Step 2: the mailed code proves control of a registered device. Wrong (and reused) codes count
   * towards the lockout; an expired one doesn't. Unknown user IDs always fail, the same way.
   */
  async verifyCode(flow: LoginFlow, input: Record<string, unknown>, req: RequestInfo, backUrl: string): Promise<void> {
    this.expect(flow, 'code', backUrl);
    await this.assertCodeDelivered(flow);
    const { tenant, client } = this.clientOf(flow.clientId);
    const length = this.deps.config.otp.length;
    const code = normalizeOtp(input.otp);
    if (!code) throw new RecoveryFieldError('otp', 400, 'recovery:errors.otp_required');
    if (!/^\d{6,12}$/.test(code)) throw new RecoveryFieldError('otp', 400, 'recovery:errors.otp_format', { length });
    await this.limitAttempts(flow, tenant, backUrl);

    const account = flow.accountId ? await this.deps.accounts.findById(flow.accountId) : null;
    if (account && isLocked(account)) {
      await this.event(flow, req, 'locked', account.id);
      throw new RecoveryLockedError(backUrl, account.lockedUntil);
    }
    const check = await this.deps.otp.verifyForFlow(flow.id, code, RECOVERY_OTP_PURPOSE);
    if (!account) {
      await this.event(flow, req, 'unknown_user', null);
      throw new RecoveryFieldError('otp', 401, 'recovery:errors.auth_failed');
    }
    // As in the login: a pending account learns that it needs activation only after its code.
    if (account.status === 'pending_activation') {
      await this.event(flow, req, 'not_activated', account.id);
      throw new NotActivatedError(backUrl);
    }
    if (check === 'expired') {
      await this.event(flow, req, 'expired_otp', account.id);
      throw new RecoveryFieldError('otp', 401, 'recovery:errors.otp_expired');
    }
    // The code this flow already accepted, sent again (a double click): once the first submission has
    // moved the flow on, no failure, and the page shows where the flow stands.
    if (check === 'used' && (await this.deps.flows.settledFrom(flow.interactionUid, 'code'))?.state !== 'code') return;
    if (check !== 'ok') await this.failure(flow, account, tenant, client, req, check === 'used' ? 'used_otp' : 'wrong_otp', 'otp', 'recovery:errors.auth_failed', backUrl);

    const moved = await this.deps.flows.transition(flow.id, 'code', { completedFactors: ['email_otp'], state: 'question' satisfies RecoveryState });
    if (!moved) throw new RecoveryStepError(backUrl);
  }

  /**
   * Step 3: the secret question's answer (compared loosely, against its hash). Wrong answers count
   * towards the lockout. A right answer leads to a new password, or for accounts whose login method
   * has none, to a fresh activation mailed to the devices.
   */
  async answer(flow: LoginFlow, input: Record<string, unknown>, req: RequestInfo, backUrl: string): Promise<RecoveryOutcome> {
    this.expect(flow, 'question', backUrl);
    const { tenant, client } = this.clientOf(flow.clientId);
    const account = await this.account(flow);
    if (this.passkeyRecoveryRefused(account, flow)) throw new RecoveryUnavailableError(backUrl, 'recovery:errors.passkey_recovery_off');
    if (!this.questionOf(account, req.locale)) throw new RecoveryUnavailableError(backUrl);
    const answer = normalizeAnswer(typeof input.answer === 'string' ? input.answer : '');
    if (!answer) throw new RecoveryFieldError('answer', 400, 'recovery:errors.answer_required');
    if (answer.length > ANSWER_MAX) throw new RecoveryFieldError('answer', 400, 'recovery:errors.answer_too_long', { max: ANSWER_MAX });
    await this.limitAttempts(flow, tenant, backUrl);
    if (isLocked(account)) {
      await this.event(flow, req, 'locked', account.id);
      throw new RecoveryLockedError(backUrl, account.lockedUntil);
    }
    if (!(await verifySecret(answer, account.secretAnswerHash)))
      await this.failure(flow, account, tenant, client, req, 'wrong_answer', 'answer', 'recovery:errors.answer_wrong', backUrl);
    // A hash made with older (weaker) parameters is replaced now that the answer is known to be right.
    await upgradeWeakHash(
      answer,
      account.secretAnswerHash,
      (current, upgraded) => this.deps.accounts.upgradeSecretAnswerHash(account.id, current, upgraded),
      (err) => this.deps.logger.warn({ accountId: account.id, error: err }, 'secret answer hash upgrade failed'),
    );

    const completedFactors = [...flow.completedFactors, 'secret_question'];
    const method = effectiveMethod(account.loginMethod, tenant.contract);
    if (METHOD_FACTORS[method].includes('password')) {
      if (!(await this.deps.flows.transition(flow.id, 'question', { completedFactors, state: 'password' satisfies RecoveryState }))) throw new RecoveryStepError(backUrl);
      return 'password';
    }
    if (METHOD_FACTORS[method].includes('passkey')) {
      if (!(await this.deps.flows.transition(flow.id, 'question', { completedFactors, state: 'passkey' satisfies RecoveryState }))) throw new RecoveryStepError(backUrl);
      return 'passkey';
    }
    // The transition comes first so a double submission can't issue (and mail) two activations.
    if (!(await this.deps.flows.transition(flow.id, 'question', { completedFactors, state: 'done:activation' satisfies RecoveryState }))) throw new RecoveryStepError(backUrl);
    await this.deps.activation.issue(account, { actor: 'user', ip: req.ip, mail: true, locale: req.locale });
    await this.recovered(account, 'activation_issued', req);
    return 'activation';
  }

  /** Step 4 (password methods): the new password, under the same rules as at activation. */
  async setPassword(flow: LoginFlow, input: Record<string, unknown>, req: RequestInfo, backUrl: string): Promise<void> {
    this.expect(flow, 'password', backUrl);
    const account = await this.account(flow);
    if (isLocked(account)) throw new RecoveryLockedError(backUrl, account.lockedUntil);
    const password = typeof input.password === 'string' ? input.password : '';
    const confirm = typeof input.confirm === 'string' ? input.confirm : '';
    if (!password) throw new RecoveryFieldError('password', 400, 'recovery:errors.password_required');
    const problem = checkPassword(password, confirm, { minLength: this.deps.config.passwordMinLength, userId: account.userId });
    if (problem)
      throw new RecoveryFieldError(problem === 'mismatch' ? 'confirm' : 'password', 400, `recovery:errors.password_${problem}`, {
        min: this.deps.config.passwordMinLength,
        max: PASSWORD_MAX_LENGTH,
      });
    if (!(await this.deps.flows.transition(flow.id, 'password', { state: 'done:password' satisfies RecoveryState }))) throw new RecoveryStepError(backUrl);
    // A reset clears the failure counter and ends whatever was signed in with the old password.
    await this.deps.accounts.resetPassword(account.id, await hashSecret(password));
    await this.deps.lifecycle.endAccess(account.id, 'password_reset');
    await this.deps.accountEvents.record({ tenantId: account.tenantId, accountId: account.id, type: 'password_reset', actor: 'user', sourceIp: req.ip, detail: { via: 'recovery' } });
    await this.recovered(account, 'password_reset', req);
  }

  /**
   * Step 4 (passkey methods): a new passkey in place of the lost one. The old passkeys stay: they are
   * the user's to delete in the account area (one may only be out of reach, not in other hands). The
   * account's other sessions end, as after a password reset.
   */
  async registerPasskey(flow: LoginFlow, input: Record<string, unknown>, req: RequestInfo, backUrl: string): Promise<void> {
    this.expect(flow, 'passkey', backUrl);
    const account = await this.account(flow);
    if (isLocked(account)) throw new RecoveryLockedError(backUrl, account.lockedUntil);
    const name = typeof input.name === 'string' ? input.name.slice(0, PASSKEY_NAME_MAX * 2) : '';
    let passkey;
    try {
      passkey = await this.deps.passkeys.register(account, this.passkeyBinding(flow), input.response, { name, deviceId: null });
    } catch (e) {
      if (e instanceof AppError && e.status === 400) throw new RecoveryFieldError('passkey', 400, e.messageKey, e.params);
      throw e;
    }
    if (!(await this.deps.flows.transition(flow.id, 'passkey', { state: 'done:passkey' satisfies RecoveryState }))) throw new RecoveryStepError(backUrl);
    await this.deps.lifecycle.endAccess(account.id, 'password_reset');
    await this.deps.accountEvents.record({
      tenantId: account.tenantId,
      accountId: account.id,
      type: 'passkey_registered',
      actor: 'user',
      sourceIp: req.ip,
      detail: { passkey: passkey.id, name: passkey.name, via: 'recovery' },
    });
    await this.recovered(account, 'passkey_registered', req);
  }

  /** A passkey ceremony belongs to the recovery flow that asked for it. */
  private passkeyBinding(flow: LoginFlow): string {
    return `recovery:${flow.id}`;
  }

  /** A passkey method's account whose contract leaves a lost passkey to the support desk (`passkey_recovery: false`). */
  private passkeyRecoveryRefused(account: AccountWithDevices, flow: LoginFlow): boolean {
    const { tenant } = this.clientOf(flow.clientId);
    return METHOD_FACTORS[effectiveMethod(account.loginMethod, tenant.contract)].includes('passkey') && !tenant.contract.passkey_recovery;
  }

  /** Refuses a step the flow is not at: pages can be replayed or skipped, the state can't. */
  expect(flow: LoginFlow, state: RecoveryState, backUrl: string): void {
    if (flow.state !== state) throw new RecoveryStepError(backUrl);
  }

  /** The flow's account; past the code step there always is one (unknown IDs never pass it). */
  private async account(flow: LoginFlow): Promise<AccountWithDevices> {
    const account = flow.accountId ? await this.deps.accounts.findById(flow.accountId) : null;
    if (!account) throw new SessionExpiredError();
    return account;
  }

  /** The account's question in the page's language, or null when none (or a retired one) is registered. */
  private questionOf(account: AccountWithDevices, locale: Locale): string | null {
    if (!account.secretAnswerHash) return null;
    const q = this.deps.config.secretQuestions.find((x) => x.id === account.secretQuestionId);
    return q ? q[locale] : null;
  }

  /**
   * Stores a code (every time, for unknown, pending and locked accounts too: same work, same timing)
   * with its mail, only to a live account's proven addresses, stored by the code's statement and sent
   * after the response (issueMailedCode). The mail limit is the login's, keyed by the ID typed.
   */
  private async sendCode(flow: LoginFlow, account: AccountWithDevices | null, tenant: Tenant, client: ClientConfig, locale: Locale, backUrl: string): Promise<void> {
    const decision = await this.deps.limits.consume('otp_mail', `${tenant.id}:${flow.submittedUserId ?? ''}`);
    if (!decision.allowed) throw new RateLimitedError(decision.retryAfterSeconds, backUrl);
    const ttl = this.deps.config.otp.ttlSeconds;
    const live = account && !isLocked(account) && account.status === 'active';
    const to = live ? deliverableAddresses(account) : [];
    await issueMailedCode(
      this.deps,
      { flowId: flow.id, accountId: account?.id ?? null, purpose: RECOVERY_OTP_PURPOSE, ttlSeconds: ttl },
      { to, userId: account?.userId ?? flow.submittedUserId ?? '', locale, clientName: client.name, tenantId: tenant.id },
    );
  }

  private async limitAttempts(flow: LoginFlow, tenant: Tenant, backUrl: string): Promise<void> {
    const decision = await this.deps.limits.consume('account_otp', `${tenant.id}:${flow.submittedUserId ?? ''}`);
    if (!decision.allowed) throw new RateLimitedError(decision.retryAfterSeconds, backUrl);
  }

  /** Counts a failure towards the shared lockout, records it, and throws the page's answer. */
  private async failure(
    flow: LoginFlow,
    account: AccountWithDevices,
    tenant: Tenant,
    client: ClientConfig,
    req: RequestInfo,
    result: RecoveryResult,
    field: string,
    messageKey: string,
    backUrl: string,
  ): Promise<never> {
    const outcome = await this.deps.lockout.registerFailure(account.id, tenant.contract.lockout);
    if (outcome.locked) {
      await this.event(flow, req, 'locked', account.id);
      const to = deliverableAddresses(account);
      if (outcome.justLocked && to.length)
        await this.deps.mail.enqueue(lockNotice(to, { userId: account.userId, clientName: client.name, locale: req.locale, lockedUntil: outcome.lockedUntil, tenantId: tenant.id }));
      throw new RecoveryLockedError(backUrl, outcome.lockedUntil);
    }
    await this.event(flow, req, result, account.id);
    throw new RecoveryFieldError(field, 401, messageKey);
  }

  /** Audit trail and notice mail for a recovery that changed the account. */
  private async recovered(account: AccountWithDevices, action: 'password_reset' | 'passkey_registered' | 'activation_issued', req: RequestInfo): Promise<void> {
    await this.deps.accountEvents.record({ tenantId: account.tenantId, accountId: account.id, type: 'recovery_used', actor: 'user', sourceIp: req.ip, detail: { action } });
    const to = deliverableAddresses(account);
    if (to.length === 0) return;
    await this.deps.mail.enqueue({
      to,
      template: 'recovery-used',
      locale: req.locale,
      params: {
        userId: account.userId,
        action: translator(req.locale)(`recovery:mail_action.${action}`),
        time: new Date().toISOString().slice(0, 19).replace('T', ' ') + ' UTC',
        ip: req.ip ?? '-',
      },
      tenantId: account.tenantId,
    });
  }

  private event(flow: LoginFlow, req: RequestInfo, result: RecoveryResult, accountId: string | null) {
    return this.deps.loginEvents.record({
      tenantId: flow.tenantId,
      accountId,
      submittedUserId: flow.submittedUserId,
      clientId: flow.clientId,
      method: RECOVERY_EVENT_METHOD,
      result,
      sourceIp: req.ip,
      userAgent: req.userAgent,
    });
  }
}
