import { randomUUID } from 'node:crypto';
import type { ClientConfig, LoginMethod, Tenant, TenantDirectory } from '../config/index.js';
import type { PresentedCertificate } from '../http/client-certificate.js';
import { BadRequestError, RateLimitedError, SessionExpiredError } from '../http/errors.js';
import type { LimitBatch, LimitCheck, RateLimits } from '../http/rate-limit.js';
import type { LoginEventService, LoginResult } from '../history/login-event.service.js';
import type { Locale } from '../i18n/index.js';
import { isLocked } from '../lockout/account-lock.js';
import { lockNotice, type LockoutService } from '../lockout/lockout.service.js';
import type { MailQueue } from '../mail/mail.types.js';
import type { AccountRepository, AccountWithDevices } from '../persistence/account.repository.js';
import type { LoginHandoff } from './login-handoff.js';
import type { LoginContextData } from '../persistence/login-context.repository.js';
import type { LoginFlow, LoginFlowRepository } from '../persistence/login-flow.repository.js';
import { provedInSession, type Factor, type FactorContext } from './factor.js';
import { deliverableAddresses } from './factors/email-otp.factor.js';
import { AccountLockedError, AuthFailedError, MethodUnavailableError, NotActivatedError, OtpNotSentError } from './login-errors.js';
import { METHOD_ACR, METHOD_FACTORS, METHOD_STRENGTH, PASSKEY_METHODS, decoyMethod, effectiveMethod, isAtLeast, strongerMethod, type FactorName } from './login-methods.js';

/** Who is asking, as the HTTP layer saw it. */
export interface RequestInfo {
  ip: string | null;
  userAgent: string | null;
  locale: Locale;
  /** The TLS client certificate sent with the request, if any (for the certificate factor). */
  clientCertificate?: PresentedCertificate;
  /** The request's own pending limits (its IP), counted with the first limit the step checks. */
  limits?: LimitBatch;
}

/** A finished login, ready to be handed to the OIDC layer. */
export interface CompletedLogin {
  accountId: string;
  amr: string[];
  acr: string;
  method: LoginMethod;
}

export type FlowView = { step: 'identify' } | { step: 'factor'; factor: Factor; context: FactorContext };

export const USER_ID_MAX = 64;

/** User IDs as typed by people: full-width letters become ASCII, surrounding spaces go. */
export function normalizeUserId(raw: unknown): string | undefined {
  if (typeof raw !== 'string') return undefined;
  return raw.normalize('NFKC').trim();
}

const factorState = (name: FactorName) => `factor:${name}`;
/** Looked up for flows without an account, so their pages run the same query as an account's. */
const NO_ACCOUNT_ID = '00000000-0000-0000-0000-000000000000';

/**
 * The login flow state machine: identify → one state per factor of the account's login method →
 * complete. State lives in the database, keyed by the oidc-provider interaction, so any instance can
 * serve any step.
 *
 * ```
 * identify --user ID--> factor:<first> --passed--> factor:<next> ... --passed--> complete
 * ```
 */
export class LoginFlowService {
  private readonly factors: Map<FactorName, Factor>;
  /** What the request loaded together with a flow (its account and newest code), by the flow object. */
  /** Flows at the user-ID step not stored yet: the first submission stores them (one statement less per login). */
  private readonly unsaved = new WeakSet<LoginFlow>();
  private readonly loadedWith = new WeakMap<LoginFlow, Pick<LoginContextData, 'account' | 'latestCode' | 'submitted'>>();

  constructor(
    private readonly deps: {
      flows: LoginFlowRepository;
      accounts: AccountRepository;
      events: LoginEventService;
      lockout: LockoutService;
      limits: RateLimits;
      mail: MailQueue;
      tenants: TenantDirectory;
      factors: Factor[];
      flowTtlSeconds: number;
      revealUnknownUser: boolean;
      /** Server secret picking unknown IDs' decoy login method. */
      decoyKey: string;
      /** Hands the account, as the completion left it, to the authorization's resume and code exchange. */
      handoff?: LoginHandoff;
    },
  ) {
    this.factors = new Map(deps.factors.map((f) => [f.name, f]));
  }

  private clientOf(clientId: string): { tenant: Tenant; client: ClientConfig } {
    const found = this.deps.tenants.client(clientId);
    if (!found) throw new SessionExpiredError();
    return found;
  }

  /**
   * The flow of an interaction, created on first sight. `loaded`: what the request already read with
   * the interaction (LoginContextRepository); its flow, account and code are then used as they are,
   * and an interaction without a flow gets one at the user-ID step that is stored by its submission.
   */
  async begin(interactionUid: string, clientId: string, loaded?: LoginContextData): Promise<LoginFlow> {
    const { tenant } = this.clientOf(clientId);
    const input = { interactionUid, tenantId: tenant.id, clientId, expiresAt: new Date(Date.now() + this.deps.flowTtlSeconds * 1000) };
    let flow: LoginFlow;
    if (loaded?.flow) {
      flow = loaded.flow;
      this.loadedWith.set(flow, { account: loaded.account, latestCode: loaded.latestCode, ...(loaded.submitted ? { submitted: loaded.submitted } : {}) });
    } else if (loaded) {
      const now = new Date();
      flow = { id: randomUUID(), ...input, accountId: null, submittedUserId: null, method: null, completedFactors: [], state: 'identify', stepUpDeclined: false, createdAt: now, updatedAt: now };
      this.unsaved.add(flow);
      if (loaded.submitted) this.loadedWith.set(flow, { account: null, latestCode: null, submitted: loaded.submitted });
    } else flow = await this.deps.flows.findOrCreate(input);
    if (flow.expiresAt.getTime() <= Date.now()) throw new SessionExpiredError();
    return flow;
  }

  /** `known`: the flow's account as just looked up (null: none), saving a second look-up. */
  private async context(flow: LoginFlow, req: RequestInfo, flowUrl: string, known?: AccountWithDevices | null): Promise<FactorContext> {
    const { tenant, client } = this.clientOf(flow.clientId);
    const loaded = this.loadedWith.get(flow);
    const account =
      known !== undefined
        ? known
        : loaded && (loaded.account?.id ?? null) === flow.accountId
          ? loaded.account
          : await this.deps.accounts.findById(flow.accountId ?? NO_ACCOUNT_ID);
    return {
      ...(loaded ? { latestCode: loaded.latestCode } : {}),
      flow,
      account,
      live: !!account && account.status === 'active' && !isLocked(account),
      tenant,
      client,
      locale: req.locale,
      ip: req.ip,
      userAgent: req.userAgent,
      flowUrl,
      ...(req.clientCertificate ? { clientCertificate: req.clientCertificate } : {}),
    };
  }

  /** Counts `checks` (with the request's pending limits) in one round trip; refused, the 429 page. */
  private async count(req: RequestInfo, checks: LimitCheck[], flowUrl: string): Promise<void> {
    let decision;
    if (req.limits) {
      req.limits.add(...checks);
      decision = await req.limits.count();
    } else decision = await this.deps.limits.consumeAll(checks);
    if (!decision.allowed) throw new RateLimitedError(decision.retryAfterSeconds, flowUrl);
  }

  private async enterFactor(factor: Factor, ctx: FactorContext, req: RequestInfo): Promise<void> {
    await this.count(req, factor.enterLimits?.(ctx) ?? [], ctx.flowUrl);
    await factor.enter(ctx);
  }

  /** What the current page of the flow is. */
  async view(flow: LoginFlow, req: RequestInfo, flowUrl: string): Promise<FlowView> {
    if (flow.state === 'identify') return { step: 'identify' };
    const factor = this.currentFactor(flow);
    const context = await this.context(flow, req, flowUrl);
    await this.assertDelivered(factor, context);
    return { step: 'factor', factor, context };
  }

  /** A code that could not be mailed: the manual's 送信できませんでした page, and back to the user ID step. */
  private async assertDelivered(factor: Factor, ctx: FactorContext): Promise<void> {
    if (!(await factor.undelivered?.(ctx))) return;
    await this.restart(ctx.flow);
    throw new OtpNotSentError(ctx.flowUrl);
  }

  private currentFactor(flow: LoginFlow): Factor {
    const name = flow.state.startsWith('factor:') ? (flow.state.slice(7) as FactorName) : undefined;
    const factor = name && this.factors.get(name);
    if (!factor) throw new SessionExpiredError();
    return factor;
  }

  private event(flow: LoginFlow, req: RequestInfo, result: LoginResult, accountId: string | null) {
    return this.deps.events.record({
      tenantId: flow.tenantId,
      accountId,
      submittedUserId: flow.submittedUserId,
      clientId: flow.clientId,
      method: flow.method,
      result,
      sourceIp: req.ip,
      userAgent: req.userAgent,
    });
  }

  /**
   * Step 1: the user ID. Moves the flow to its first factor (and, for e-mail OTP, sends the code).
   * `required`: the method the client asks for (acr_values); when stronger than the account's own,
   * the login runs the stronger one.
   *
   * Unless the deployment reveals unknown IDs, this step does the same work and shows the same page
   * for unknown IDs and for pending, locked and live accounts: nobody learns here whether an ID
   * exists. An unknown ID walks a decoy method that is stable per ID; a pending account learns that
   * it needs activation only at the factor's submit.
   */
  async identify(flow: LoginFlow, rawUserId: unknown, req: RequestInfo, flowUrl: string, required?: LoginMethod): Promise<void> {
    const userId = normalizeUserId(rawUserId);
    if (!userId) throw new BadRequestError('login:errors.user_id_required', {}, flowUrl);
    if (userId.length > USER_ID_MAX) throw new BadRequestError('login:errors.user_id_too_long', { max: USER_ID_MAX }, flowUrl);
    if (flow.state !== 'identify') throw new BadRequestError('login:errors.already_identified', {}, flowUrl);
    const { tenant } = this.clientOf(flow.clientId);
    // Usually loaded with the flow already (the same statement for known and unknown IDs).
    const submitted = this.loadedWith.get(flow)?.submitted;
    const account = submitted?.userId === userId ? submitted.account : await this.deps.accounts.findByUserId(tenant.id, userId);

    if (this.deps.revealUnknownUser) {
      if (!account) {
        await this.event({ ...flow, submittedUserId: userId }, req, 'unknown_user', null);
        throw new OtpNotSentError(flowUrl);
      }
      if (account.status === 'pending_activation') {
        await this.event({ ...flow, submittedUserId: userId }, req, 'not_activated', account.id);
        throw new NotActivatedError(flowUrl);
      }
    }

    // Unknown IDs (by default), pending and locked accounts walk the same path as live ones, as a decoy.
    const own: LoginMethod = account ? effectiveMethod(account.loginMethod, tenant.contract) : decoyMethod(this.deps.decoyKey, tenant.id, userId, tenant.contract);
    const method = strongerMethod(own, required);
    const first = METHOD_FACTORS[method][0] ?? 'email_otp';
    const next = { ...flow, accountId: account?.id ?? null, submittedUserId: userId, method, state: factorState(first) };
    const factor = this.currentFactor(next);
    const ctx = await this.context(next, req, flowUrl, account);
    next.id = await this.leaveIdentify(flow, { accountId: account?.id ?? null, submittedUserId: userId, method, completedFactors: [], state: factorState(first) }, flowUrl);
    // Only the submission that moved the flow counts towards the factor's limit (a double click costs one mail).
    await this.enterFactor(factor, ctx, req);
  }

  /** Moves a flow from the user-ID step (storing it, if it is not yet); returns its id. */
  private async leaveIdentify(flow: LoginFlow, identified: Pick<LoginFlow, 'accountId' | 'submittedUserId' | 'method' | 'completedFactors' | 'state'>, flowUrl: string): Promise<string> {
    if (this.unsaved.has(flow)) {
      const id = await this.deps.flows.createIdentified(flow, identified);
      if (!id) throw new BadRequestError('login:errors.already_identified', {}, flowUrl);
      // A flow stored by a restart keeps its own id.
      return id;
    }
    if (!(await this.deps.flows.transition(flow.id, 'identify', identified))) throw new BadRequestError('login:errors.already_identified', {}, flowUrl);
    return flow.id;
  }

  /**
   * Options for a login without a user ID (a discoverable passkey), for the user-ID page; undefined
   * when the client's contract has no passkey method.
   */
  async discoverableOptions(flow: LoginFlow): Promise<unknown> {
    const { tenant } = this.clientOf(flow.clientId);
    const discoverable = this.factors.get('passkey')?.discoverable;
    if (!discoverable || !tenant.contract.login_methods.some((m) => PASSKEY_METHODS.includes(m))) return undefined;
    return discoverable.options({ flow, tenant });
  }

  /**
   * A login without a user ID: the passkey names its account (of the client's tenant only). The flow
   * moves to that account's passkey step, as if its ID had been typed, and the answer is submitted
   * there, with every rule of a typed ID (lock, activation, lockout, history). The method is the
   * account's own, raised to `required`, or the weakest contract method above it with a passkey step;
   * what it needs besides the passkey (the mailed code of otp_passkey) follows. A refused answer
   * sends the flow back to the user-ID step, so it never shows the account's ID.
   */
  async discover(flow: LoginFlow, input: Record<string, unknown>, req: RequestInfo, flowUrl: string, required?: LoginMethod): Promise<CompletedLogin | { next: FactorName }> {
    if (flow.state !== 'identify') throw new BadRequestError('login:errors.already_identified', {}, flowUrl);
    const { tenant } = this.clientOf(flow.clientId);
    const discoverable = this.factors.get('passkey')?.discoverable;
    if (!discoverable || !tenant.contract.login_methods.some((m) => PASSKEY_METHODS.includes(m))) throw new BadRequestError('common:errors.bad_request', {}, flowUrl);
    const claim = await discoverable.claimedAccount({ flow, tenant, flowUrl }, input);
    const account = 'accountId' in claim ? await this.deps.accounts.findById(claim.accountId) : null;
    if (!account) {
      const rejected = 'rejected' in claim ? claim.rejected : undefined;
      await this.event({ ...flow, method: 'passkey' }, req, rejected?.result ?? 'wrong_passkey', null);
      throw new AuthFailedError(flowUrl, rejected?.messageKey);
    }
    const target = strongerMethod(effectiveMethod(account.loginMethod, tenant.contract), required);
    const method =
      [target, ...METHOD_STRENGTH.filter((m) => tenant.contract.login_methods.includes(m))].find(
        (m) => METHOD_FACTORS[m].includes('passkey') && isAtLeast(m, target),
      ) ?? target;
    const at = { accountId: account.id, submittedUserId: account.userId, method, completedFactors: [], state: factorState('passkey') };
    const next = { ...flow, ...at, id: await this.leaveIdentify(flow, at, flowUrl) };
    try {
      return await this.submit(next, input, req, flowUrl);
    } catch (e) {
      await this.deps.flows.transition(next.id, next.state, { state: 'identify', accountId: null, submittedUserId: null, method: null, completedFactors: [] });
      throw e;
    }
  }

  /** Sends the current factor's code again, once its cool-down has passed. */
  async resend(flow: LoginFlow, req: RequestInfo, flowUrl: string): Promise<void> {
    const factor = this.currentFactor(flow);
    const ctx = await this.context(flow, req, flowUrl);
    if (!factor.resendWait) throw new BadRequestError('common:errors.bad_request', {}, flowUrl);
    const wait = await factor.resendWait(ctx);
    if (wait > 0) throw new BadRequestError('login:errors.resend_wait', { seconds: wait }, flowUrl);
    await this.enterFactor(factor, ctx, req);
  }

  /**
   * Back to the user ID page (another ID, or a fresh start). The user asked for another ID, so a
   * browser already signed in is not stepped up again in this flow (beginStepUp).
   */
  async restart(flow: LoginFlow): Promise<void> {
    if (this.unsaved.has(flow)) return;
    await this.deps.flows.update(flow.id, { state: 'identify', accountId: null, submittedUserId: null, method: null, completedFactors: [], stepUpDeclined: true });
  }

  /**
   * A factor's answer. Wrong answers count towards the lockout shared by all factors; the last
   * factor's success resets the counter, unless a lock landed first.
   */
  async submit(flow: LoginFlow, input: Record<string, unknown>, req: RequestInfo, flowUrl: string, posted?: FactorName): Promise<CompletedLogin | { next: FactorName }> {
    // A resubmission after the flow finished (a late double click) is checked against its last factor.
    const finished = flow.state === 'complete';
    const last = (flow.completedFactors.at(-1) as FactorName | undefined) ?? METHOD_FACTORS[(flow.method ?? 'otp') as LoginMethod].at(-1);
    const factor = finished && last ? this.currentFactor({ ...flow, state: factorState(last) }) : this.currentFactor(flow);
    // The form of a factor this login has already passed (a double click landing after the first moved
    // the flow on, a second tab): answered as the first was, and the page shows the current step. Not
    // checked against the current factor, which would refuse it for lacking that factor's answer.
    if (!finished && posted && posted !== factor.name && flow.completedFactors.includes(posted)) return { next: factor.name };
    const ctx = await this.context(flow, req, flowUrl);
    const { tenant, account } = ctx;

    const limitKey = `${tenant.id}:${flow.submittedUserId ?? ''}`;
    await this.count(req, [{ kind: 'account_otp', key: limitKey }], flowUrl);

    if (account && isLocked(account)) {
      await this.event(flow, req, 'locked', account.id);
      throw new AccountLockedError(flowUrl, undefined, account.lockedUntil);
    }
    await this.assertDelivered(factor, ctx);
    const outcome = await factor.submit(ctx, input);
    if (!account) {
      await this.event(flow, req, 'unknown_user', null);
      throw new AuthFailedError(flowUrl);
    }
    // Only now, as for a wrong code, may the user learn that this ID needs activation first.
    if (account.status === 'pending_activation') {
      await this.event(flow, req, 'not_activated', account.id);
      throw new NotActivatedError(flowUrl);
    }
    if (finished && outcome.kind === 'passed') return this.settled(flow, account, flowUrl);
    if (outcome.kind === 'rejected' && outcome.maybeDuplicate) {
      try {
        return await this.settled(flow, account, flowUrl);
      } catch (e) {
        if (!(e instanceof SessionExpiredError)) throw e; // the flow stayed here: a failure after all
      }
    }
    if (outcome.kind === 'rejected') {
      if (outcome.countsAsFailure) {
        const failure = await this.deps.lockout.registerFailure(account.id, tenant.contract.lockout);
        if (failure.locked) {
          await this.event(flow, req, 'locked', account.id);
          if (failure.justLocked) await this.notifyLocked(account, ctx, failure.lockedUntil);
          throw new AccountLockedError(flowUrl, failure.justLocked ? factor.name : undefined, failure.lockedUntil);
        }
      }
      await this.event(flow, req, outcome.result, account.id);
      throw new AuthFailedError(flowUrl, outcome.messageKey, outcome.messageParams);
    }

    const method = (flow.method ?? 'otp') as LoginMethod;
    const completed = [...flow.completedFactors, factor.name];
    const remaining = METHOD_FACTORS[method].filter((f) => !completed.includes(f));
    const nextFactor = remaining[0];
    if (nextFactor) {
      // A method raised above the account's own (acr_values) may need a factor the account lacks: say
      // so now that the account has proven itself, instead of a step that cannot succeed.
      if (method !== effectiveMethod(account.loginMethod, tenant.contract) && !(await this.factors.get(nextFactor)?.isConfiguredFor(account))) {
        await this.event(flow, req, 'method_unavailable', account.id);
        throw new MethodUnavailableError(method, flowUrl);
      }
      const moved = await this.deps.flows.transition(flow.id, flow.state, { completedFactors: completed, state: factorState(nextFactor) }, outcome.codeId);
      if (!moved) return this.settled(flow, account, flowUrl);
      const next = { ...flow, completedFactors: completed, state: factorState(nextFactor) };
      await this.enterFactor(this.currentFactor(next), { ...ctx, flow: next }, req);
      return { next: nextFactor };
    }

    // One statement: the flow completes, the counter resets unless a lock won, the event is recorded.
    const done = await this.deps.flows.complete({
      flowId: flow.id,
      from: flow.state,
      completedFactors: completed,
      accountId: account.id,
      locale: req.locale,
      ...(outcome.codeId ? { consumeCodeId: outcome.codeId } : {}),
      event: { tenantId: flow.tenantId, submittedUserId: flow.submittedUserId, clientId: flow.clientId, method: flow.method, sourceIp: req.ip, userAgent: req.userAgent },
    });
    if (!done) return this.settled(flow, account, flowUrl);
    await this.deps.events.recordedElsewhere(done.succeeded ? 'success' : 'locked', flow.method, { tenantId: flow.tenantId, accountId: account.id, clientId: flow.clientId, sourceIp: req.ip });
    if (!done.succeeded) throw new AccountLockedError(flowUrl, undefined, done.lockedUntil);
    if (done.account) this.deps.handoff?.put({ ...account, ...done.account, failedAttempts: 0, lockedAt: null, lockedUntil: null, lastLoginIp: req.ip });
    if (!done.seenIp && done.previousLoginAt) await this.notifyNewIp(account, ctx);
    const amr = METHOD_FACTORS[method].flatMap((name) => (name === factor.name && outcome.amr ? outcome.amr : (this.factors.get(name)?.amr ?? [name])));
    return { accountId: account.id, amr, acr: METHOD_ACR[method], method };
  }

  /**
   * The answer to a submission that lost the race to an identical one of the same flow (a double
   * click): once the winner has moved the flow on, the same outcome as the winner's, without another
   * event or counter change. SessionExpiredError when the flow did not move on to a later step.
   */
  private async settled(flow: LoginFlow, account: AccountWithDevices, flowUrl: string): Promise<CompletedLogin | { next: FactorName }> {
    // The winner moves the flow right after its check; wait for that rather than guess.
    const now = flow.state === 'complete' ? flow : await this.deps.flows.settledFrom(flow.interactionUid, flow.state);
    const movedOn = !!now && (now.state === 'complete' || (now.state !== flow.state && now.state.startsWith('factor:')));
    if (!now || !movedOn) throw new SessionExpiredError();
    if (now.state !== 'complete') return { next: now.state.slice(7) as FactorName };
    const current = await this.deps.accounts.findById(account.id);
    if (!current || isLocked(current)) throw new AccountLockedError(flowUrl, undefined, current?.lockedUntil);
    const method = (now.method ?? 'otp') as LoginMethod;
    const amr = METHOD_FACTORS[method].flatMap((name) => this.factors.get(name)?.amr ?? [name]);
    return { accountId: account.id, amr, acr: METHOD_ACR[method], method };
  }

  /**
   * Step-up: the browser's session already belongs to `accountId`, but the client asks for a stronger
   * method than the session's. The flow starts pre-identified, with the factors the session already
   * proved (its amr) counted as done, at the first missing one. Nothing happens once the flow has
   * left the user ID step (a reload), or when the user asked for another user ID there (restart).
   * Throws MethodUnavailableError when the account cannot perform a missing factor (e.g. holds no
   * certificate).
   */
  async beginStepUp(
    flow: LoginFlow,
    session: { accountId: string; amr: string[]; required: LoginMethod | undefined },
    req: RequestInfo,
    flowUrl: string,
  ): Promise<void> {
    if (flow.state !== 'identify' || flow.stepUpDeclined) return;
    const { tenant } = this.clientOf(flow.clientId);
    const account = await this.deps.accounts.findById(session.accountId);
    // Another tenant's session (or a deleted account) gets the ordinary login.
    if (!account || account.tenantId !== tenant.id || account.status !== 'active') return;
    if (isLocked(account)) throw new AccountLockedError(flowUrl, undefined, account.lockedUntil);
    const method = strongerMethod(effectiveMethod(account.loginMethod, tenant.contract), session.required);
    const all = METHOD_FACTORS[method];
    const proved = all.filter((name) => {
      const factor = this.factors.get(name);
      return factor ? provedInSession(factor, session.amr) : session.amr.includes(name);
    });
    // Nothing missing by amr (an older session of the same method): the whole method again.
    const completed = proved.length < all.length ? proved : [];
    const missing = all.filter((f) => !completed.includes(f));
    for (const name of missing) {
      if (!(await this.factors.get(name)?.isConfiguredFor(account))) {
        await this.event({ ...flow, submittedUserId: account.userId, method }, req, 'method_unavailable', account.id);
        throw new MethodUnavailableError(method, flowUrl);
      }
    }
    const first = missing[0]!;
    const moved = await this.deps.flows.transition(flow.id, 'identify', {
      accountId: account.id,
      submittedUserId: account.userId,
      method,
      completedFactors: completed,
      state: factorState(first),
    });
    if (!moved) return; // a concurrent request started it
    const next = { ...flow, accountId: account.id, submittedUserId: account.userId, method, completedFactors: completed, state: factorState(first) };
    await this.enterFactor(this.currentFactor(next), { ...(await this.context(next, req, flowUrl)), account }, req);
  }

  private async notifyLocked(account: AccountWithDevices, ctx: FactorContext, lockedUntil: Date | null) {
    const to = deliverableAddresses(account);
    if (to.length) await this.deps.mail.enqueue(lockNotice(to, { userId: account.userId, clientName: ctx.client.name, locale: ctx.locale, lockedUntil, tenantId: ctx.tenant.id }));
  }

  private async notifyNewIp(account: AccountWithDevices, ctx: FactorContext) {
    const to = deliverableAddresses(account);
    if (to.length && ctx.ip)
      await this.deps.mail.enqueue({
        to,
        template: 'new-ip-login',
        locale: ctx.locale,
        params: { userId: account.userId, ip: ctx.ip, time: new Date().toISOString(), clientName: ctx.client.name },
        tenantId: ctx.tenant.id,
      });
  }
}
