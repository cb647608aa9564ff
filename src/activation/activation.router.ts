import Router from '@koa/router';
import { limitIp } from '../http/rate-limit.middleware.js';
import type { Context } from 'koa';
import type { CertificateService } from '../certificates/certificate.service.js';
import type { TenantDirectory } from '../config/index.js';
import { PASSWORD_MAX_LENGTH } from '../credentials/password-policy.js';
import type { LoginEventService } from '../history/login-event.service.js';
import { clientIp } from '../http/client-ip.js';
import { AppError, NotFoundError } from '../http/errors.js';
import { PASSKEY_NAME_MAX } from '../passkey/passkey.service.js';
import type { RateLimits } from '../http/rate-limit.js';
import type { AccountRepository, AccountWithDevices } from '../persistence/account.repository.js';
import type { ActivationService, RegistrationProblem } from './activation.service.js';
import { isLocked, temporaryLockMessage } from '../lockout/account-lock.js';

const COOKIE = 'activation';
/** After completion: names the account whose new certificates this browser may download. */
const DONE_COOKIE = 'activation_done';
/** How long step 2 may follow a successful step 1; the code itself is only consumed at step 2. */
const SESSION_SECONDS = 30 * 60;
const USER_ID_MAX = 64;
const OTP_MAX = 20;
/** ActivationService.checkRegistration's limit on a normalised answer. */
const ANSWER_MAX = 100;

interface ActivationSession {
  accountId: string;
  otpId: string;
  tenant: string;
  /** Seconds since the epoch. */
  exp: number;
}

type FieldErrors = Partial<Record<'userId' | 'otp' | 'questionId' | 'answer' | 'password' | 'confirm' | 'passkey', string>>;

export interface ActivationRouterDeps {
  activation: ActivationService;
  accounts: AccountRepository;
  tenants: TenantDirectory;
  limits: RateLimits;
  loginEvents: LoginEventService;
  /** Certificates issued at activation (password_certificate) are downloaded from the completion page. */
  certificates: Pick<CertificateService, 'listForAccount' | 'pkcs12For'>;
  passwordMinLength: number;
  /** Whether the issuer is https (cookies then get the Secure flag). */
  secure: boolean;
}

/**
 * The activation screens (manual chapter 3): 初回認証 (user ID + activation code) → 認証情報登録
 * (secret question, and a password when the login method needs one) → 認証情報登録完了. Thin: the
 * rules live in ActivationService; between the two steps a signed cookie names the verified code.
 */
export function activationRouter(deps: ActivationRouterDeps) {
  const router = new Router({ prefix: '/activation' });
  const { activation } = deps;

  /** The tenant in the path; an unknown one is a plain 404 (the URL came from no site of ours). */
  function tenantOf(ctx: Context): string {
    const id = String(ctx.params.tenant ?? '');
    if (!deps.tenants.tenant(id)) throw new NotFoundError();
    return id;
  }

  const base = (tenant: string) => `/activation/${encodeURIComponent(tenant)}`;
  const t = (ctx: Context, key: string, params?: Record<string, unknown>): string => (ctx.state.t as (k: string, p?: object) => string)(key, params);
  const field = (ctx: Context, name: string): string => {
    const b = (ctx.request as { body?: unknown }).body;
    const v = b && typeof b === 'object' && !Array.isArray(b) ? (b as Record<string, unknown>)[name] : undefined;
    return typeof v === 'string' ? v : '';
  };

  const cookieOptions = (ctx: Context) => ({ signed: true, httpOnly: true, sameSite: 'lax' as const, secure: deps.secure && ctx.secure, path: '/activation', overwrite: true });

  function setSession(ctx: Context, session: ActivationSession) {
    ctx.cookies.set(COOKIE, Buffer.from(JSON.stringify(session)).toString('base64url'), { ...cookieOptions(ctx), maxAge: SESSION_SECONDS * 1000 });
  }

  function clearSession(ctx: Context) {
    ctx.cookies.set(COOKIE, null, cookieOptions(ctx));
  }

  /** The account this browser just activated with certificates, within the same half hour. */
  async function doneAccount(ctx: Context, tenant: string): Promise<AccountWithDevices | undefined> {
    const raw = ctx.cookies.get(DONE_COOKIE, { signed: true });
    if (!raw) return undefined;
    let s: Partial<{ accountId: string; tenant: string; exp: number }>;
    try {
      s = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as typeof s;
    } catch {
      return undefined;
    }
    if (typeof s.accountId !== 'string' || s.tenant !== tenant || typeof s.exp !== 'number' || s.exp * 1000 <= Date.now()) return undefined;
    const account = await deps.accounts.findById(s.accountId);
    return account && account.tenantId === tenant && account.status === 'active' && !isLocked(account) ? account : undefined;
  }

  /** The verified step 1 of this tenant, if the signed cookie names one that has not run out. */
  function readSession(ctx: Context, tenant: string): ActivationSession | undefined {
    const raw = ctx.cookies.get(COOKIE, { signed: true });
    if (!raw) return undefined;
    try {
      const s = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Partial<ActivationSession>;
      if (typeof s.accountId !== 'string' || typeof s.otpId !== 'string' || s.tenant !== tenant || typeof s.exp !== 'number') return undefined;
      if (s.exp * 1000 <= Date.now()) return undefined;
      return s as ActivationSession;
    } catch {
      return undefined;
    }
  }

  /** The account step 2 is for, still waiting for activation and not locked; else undefined. */
  async function sessionAccount(ctx: Context, tenant: string): Promise<{ session: ActivationSession; account: AccountWithDevices } | undefined> {
    const session = readSession(ctx, tenant);
    if (!session) return undefined;
    const account = await deps.accounts.findById(session.accountId);
    if (!account || account.tenantId !== tenant || account.status !== 'pending_activation' || isLocked(account)) return undefined;
    return { session, account };
  }

  async function renderVerify(ctx: Context, tenant: string, locals: { userIdValue: string; errors?: FieldErrors; message?: string; locked?: boolean }) {
    await ctx.render('activation/verify', { pageTitle: t(ctx, 'activation:verify.title'), step: 0, action: base(tenant), errors: {}, ...locals });
  }

  /** Step 2 could not go on (cookie missing or stale, code used meanwhile): say so, point to step 1. */
  async function renderRestart(ctx: Context, tenant: string, status: number, messageKey: string) {
    clearSession(ctx);
    ctx.status = status;
    await ctx.render('activation/restart', { pageTitle: t(ctx, 'activation:register.title'), step: 1, message: t(ctx, messageKey), restartUrl: base(tenant) });
  }

  function problemMessage(ctx: Context, p: RegistrationProblem): { field: keyof FieldErrors; message: string } {
    if (p.field === 'password') {
      const params = { min: deps.passwordMinLength, max: PASSWORD_MAX_LENGTH };
      // A mismatch is the confirmation's fault, so it is shown next to that field.
      return { field: p.problem === 'mismatch' ? 'confirm' : 'password', message: t(ctx, `activation:errors.password_${p.problem}`, params) };
    }
    return { field: p.field, message: t(ctx, `activation:errors.${p.field}_${p.problem}`, { max: ANSWER_MAX }) };
  }

  /** A passkey ceremony belongs to the verified activation code it follows. */
  const passkeyBinding = (session: ActivationSession) => `activation:${session.otpId}`;

  async function renderRegister(ctx: Context, tenant: string, account: AccountWithDevices, session: ActivationSession, locals: { questionId?: string; passkeyName?: string; errors?: FieldErrors }) {
    const needsPasskey = activation.needsPasskey(account);
    await ctx.render('activation/register', {
      needsPasskey,
      // The options are JSON in a data block; `<` escaped so no text in them can end the element.
      passkeyOptions: needsPasskey ? JSON.stringify(await activation.passkeyOptions(account, passkeyBinding(session))).replace(/</g, '\\u003c') : undefined,
      passkeyNameMax: PASSKEY_NAME_MAX,
      passkeyName: t(ctx, 'activation:register.passkey_default_name'),
      pageTitle: t(ctx, 'activation:register.title'),
      step: 1,
      action: `${base(tenant)}/register`,
      userId: account.userId,
      questions: activation.questionsFor(ctx.state.locale),
      needsPassword: activation.needsPassword(account),
      passwordMin: deps.passwordMinLength,
      answerMax: ANSWER_MAX,
      questionId: '',
      errors: {},
      ...locals,
    });
  }

  // Step 1: 初回認証.
  router.get('/:tenant', async (ctx) => {
    const tenant = tenantOf(ctx);
    const user = typeof ctx.query.user === 'string' ? ctx.query.user.trim().slice(0, USER_ID_MAX) : '';
    await renderVerify(ctx, tenant, { userIdValue: user });
  });

  router.post('/:tenant', async (ctx) => {
    const tenant = tenantOf(ctx);
    await limitIp(deps.limits, ctx, base(tenant));
    const userId = field(ctx, 'userId').normalize('NFKC').trim().slice(0, USER_ID_MAX);
    // Full-width digits and spaces or hyphens from a pasted code are forgiven.
    const otp = field(ctx, 'otp').normalize('NFKC').replace(/[\s-]/g, '').slice(0, OTP_MAX);
    const errors: FieldErrors = {};
    if (!userId) errors.userId = t(ctx, 'activation:errors.user_id_required');
    if (!otp) errors.otp = t(ctx, 'activation:errors.otp_required');
    if (errors.userId || errors.otp) {
      ctx.status = 400;
      await renderVerify(ctx, tenant, { userIdValue: userId, errors });
      return;
    }

    const check = await activation.verify(tenant, userId, otp, ctx.state.locale);
    if (check.ok) {
      setSession(ctx, { accountId: check.account.id, otpId: check.otpId, tenant, exp: Math.floor(Date.now() / 1000) + SESSION_SECONDS });
      ctx.status = 303;
      ctx.redirect(`${base(tenant)}/register`);
      return;
    }

    // Named by ID so the account's login history shows the attempt; unknown IDs are kept by name only.
    const account = await deps.accounts.findByUserId(tenant, userId);
    await deps.loginEvents.record({
      tenantId: tenant,
      accountId: account?.id ?? null,
      submittedUserId: userId,
      clientId: null,
      method: 'activation',
      result: check.reason === 'locked' ? 'locked' : 'activation_failed',
      sourceIp: clientIp(ctx),
      userAgent: ctx.get('user-agent') || null,
    });
    if (check.reason === 'locked') {
      ctx.status = 403;
      const temporary = temporaryLockMessage('activation:errors', check.lockedUntil);
      const message = temporary ? t(ctx, ...temporary) : t(ctx, check.byCode ? 'activation:errors.locked' : 'activation:errors.locked_any');
      await renderVerify(ctx, tenant, { userIdValue: userId, message, locked: !temporary });
      return;
    }
    const message = t(ctx, check.reason === 'expired' ? 'activation:errors.otp_expired' : 'activation:errors.otp_mismatch');
    ctx.status = check.reason === 'expired' ? 400 : 401;
    await renderVerify(ctx, tenant, { userIdValue: userId, message, errors: { otp: message } });
  });

  // Step 2: 認証情報登録.
  router.get('/:tenant/register', async (ctx) => {
    const tenant = tenantOf(ctx);
    const found = await sessionAccount(ctx, tenant);
    if (!found) return renderRestart(ctx, tenant, 400, 'activation:errors.session_expired');
    await renderRegister(ctx, tenant, found.account, found.session, {});
  });

  router.post('/:tenant/register', async (ctx) => {
    const tenant = tenantOf(ctx);
    await limitIp(deps.limits, ctx, base(tenant));
    const found = await sessionAccount(ctx, tenant);
    if (!found) return renderRestart(ctx, tenant, 400, 'activation:errors.session_expired');
    const { account, session } = found;
    const input = { questionId: field(ctx, 'questionId'), answer: field(ctx, 'answer'), password: field(ctx, 'password'), confirm: field(ctx, 'confirm') };

    const problem = activation.checkRegistration(account, input);
    if (problem) {
      const { field: name, message } = problemMessage(ctx, problem);
      ctx.status = 400;
      // The chosen question stays; the answer and passwords are secrets and are never sent back.
      await renderRegister(ctx, tenant, account, session, { questionId: input.questionId, passkeyName: field(ctx, 'passkeyName'), errors: { [name]: message } });
      return;
    }

    if (activation.needsPasskey(account)) {
      try {
        await activation.registerPasskey(account, passkeyBinding(session), field(ctx, 'response'), field(ctx, 'passkeyName'), { actor: 'user', ip: clientIp(ctx) });
      } catch (e) {
        if (!(e instanceof AppError) || e.status !== 400) throw e;
        // The same answer posted twice (a double click): the first used the challenge, and leads the way.
        if (e.messageKey === 'passkey:errors.challenge' && (await activation.completedMeanwhile(account.id))) return redirectDone(ctx, tenant);
        ctx.status = 400;
        await renderRegister(ctx, tenant, account, session, { questionId: input.questionId, passkeyName: field(ctx, 'passkeyName'), errors: { passkey: t(ctx, e.messageKey, e.params) } });
        return;
      }
    }

    const done = await activation.complete(account, session.otpId, input, { actor: 'user', ip: clientIp(ctx), locale: ctx.state.locale });
    // Undefined: the code was used, replaced by a fresh activation, or ran out since step 1. Used by a
    // submission of the same form a moment earlier (a double click): lead where that one led.
    if (!done && !(await activation.completedMeanwhile(account.id))) return renderRestart(ctx, tenant, 409, 'activation:errors.code_used');
    clearSession(ctx);
    if (done?.certificates.length) {
      const value = Buffer.from(JSON.stringify({ accountId: account.id, tenant, exp: Math.floor(Date.now() / 1000) + SESSION_SECONDS })).toString('base64url');
      ctx.cookies.set(DONE_COOKIE, value, { ...cookieOptions(ctx), maxAge: SESSION_SECONDS * 1000 });
    }
    redirectDone(ctx, tenant);
  });

  function redirectDone(ctx: Context, tenant: string) {
    ctx.status = 303;
    ctx.redirect(`${base(tenant)}/done`);
  }

  // Step 3: 認証情報登録完了. Only a certificate account's own browser sees its devices' certificates.
  router.get('/:tenant/done', async (ctx) => {
    const tenant = tenantOf(ctx);
    const account = await doneAccount(ctx, tenant);
    const valid = account ? (await deps.certificates.listForAccount(account.id)).filter((c) => c.status === 'valid') : [];
    const certificates = (account?.devices ?? []).flatMap((d) => {
      const c = valid.find((x) => x.deviceId === d.id);
      return c ? [{ deviceNumber: d.number, email: d.email, notAfter: c.notAfter, downloadPassword: c.downloadPassword, href: `${base(tenant)}/certificates/${d.number}` }] : [];
    });
    await ctx.render('activation/done', { pageTitle: t(ctx, 'activation:done.title'), step: 2, certificates, downloadMinutes: SESSION_SECONDS / 60 });
  });

  // The PKCS#12 file of a device's new certificate, for the browser that completed the activation.
  router.get('/:tenant/certificates/:number', async (ctx) => {
    const tenant = tenantOf(ctx);
    const account = await doneAccount(ctx, tenant);
    const device = account?.devices.find((d) => String(d.number) === ctx.params.number);
    const file = account && device ? await deps.certificates.pkcs12For(account.id, device.id) : null;
    if (!file) throw new NotFoundError();
    ctx.set('Content-Disposition', `attachment; filename="${file.filename}"`);
    ctx.type = file.contentType;
    ctx.body = file.data;
  });

  return router;
}
