import Router from '@koa/router';
import type { Context } from 'koa';
import type { TenantDirectory } from '../config/index.js';
import { clientIp } from '../http/client-ip.js';
import { BadRequestError, RateLimitedError } from '../http/errors.js';
import { LimitBatch, type RateLimits } from '../http/rate-limit.js';
import { normalizeUserId, USER_ID_MAX, type LoginFlowService, type RequestInfo } from '../login/login-flow.service.js';
import { optionsJson } from '../login/factors/passkey.factor.js';
import { requiredMethod, type FactorName } from '../login/login-methods.js';
import type { OidcInteractions } from '../oidc/interactions.js';
import type { LoginContextRepository } from '../persistence/login-context.repository.js';
import type { OidcPayloadRepository } from '../persistence/oidc-payload.repository.js';
import { formBody, loadInteraction, requestInfo, withLoginStep } from './interaction-context.js';

/** Login prompt reasons that only mean "the session's method is too weak" (step-up), not "sign in again". */
const STEP_UP_REASONS = new Set(['acr_step_up', 'essential_acr', 'essential_acrs']);
/** The factor whose form posts to each path of a login step. */
const POSTED_FACTOR: Record<string, FactorName | undefined> = { otp: 'email_otp', password: 'password', certificate: 'client_certificate', passkey: 'passkey' };

/**
 * The login screens (manual chapter 4) on top of oidc-provider's interactions. Thin: it validates
 * input, asks the login flow service, and renders or redirects. The only caller of interactionFinished.
 */
export function interactionRouter(deps: {
  interactions: OidcInteractions;
  flows: LoginFlowService;
  tenants: TenantDirectory;
  limits: RateLimits;
  otpTtlSeconds: number;
  contexts: LoginContextRepository;
  payloads: OidcPayloadRepository;
}) {
  const router = new Router({ prefix: '/interaction' });
  const { interactions, flows } = deps;

  const load = (ctx: Context) => loadInteraction(ctx, interactions);
  const step = <T>(ctx: Context, handle: Parameters<typeof withLoginStep<T>>[2], submittedUserId?: string) => withLoginStep(ctx, deps, handle, submittedUserId);

  /**
   * A form submission of the login: it counts against the caller's IP, together with the step's own
   * limit where it has one (one round trip), or on its own once the step is done.
   */
  const counted = async (ctx: Context, uid: string, handle: (req: RequestInfo) => Promise<void>) => {
    const limits = new LimitBatch(deps.limits);
    limits.add({ kind: 'ip', key: clientIp(ctx) ?? 'unknown' });
    try {
      await handle({ ...requestInfo(ctx), limits });
    } finally {
      // Not counted yet (the step failed early, or has no limit of its own): counted now. Refused,
      // the 429 page replaces whatever the step answered.
      if (limits.uncounted) {
        const d = await limits.count();
        if (!d.allowed) throw new RateLimitedError(d.retryAfterSeconds, flowUrl(uid));
      }
    }
  };
  const flowUrl = (uid: string) => `/interaction/${uid}`;
  const body = formBody;

  router.get('/:uid', (ctx) => step(ctx, async ({ details, loaded }) => {
    const uid = details.uid;
    const clientName = deps.tenants.client(details.params.client_id)?.client.name;
    if (details.prompt.name === 'consent') {
      const scopes = (details.prompt.details.missingOIDCScope as string[] | undefined) ?? [];
      await ctx.render('login/consent', { uid, clientName, scopes });
      return;
    }
    if (details.prompt.name !== 'login') throw new BadRequestError();
    let flow = await flows.begin(uid, details.params.client_id, loaded);
    const sessionAccount = details.session?.accountId;
    if (flow.state === 'identify' && !flow.stepUpDeclined && sessionAccount && details.prompt.reasons.every((r) => STEP_UP_REASONS.has(r))) {
      const required = requiredMethod(details.params.acr_values);
      // Step-up starts from a stored flow.
      const stored = await flows.begin(uid, details.params.client_id);
      await flows.beginStepUp(stored, { accountId: sessionAccount, amr: details.session?.amr ?? [], required }, requestInfo(ctx), flowUrl(uid));
      flow = await flows.begin(uid, details.params.client_id);
    }
    const view = await flows.view(flow, requestInfo(ctx), flowUrl(uid));
    if (view.step === 'identify') {
      const hint = typeof details.params.login_hint === 'string' ? details.params.login_hint.slice(0, 64) : '';
      // A contract with passkeys: the page also offers a login without a user ID (autofill, or a button).
      const discoverable = await flows.discoverableOptions(flow);
      await ctx.render('login/identify', { uid, clientName, userIdValue: hint, ...(discoverable ? { passkeyOptions: optionsJson(discoverable) } : {}) });
      return;
    }
    const { view: template, locals } = await view.factor.render(view.context);
    const notice = ctx.query.resent === '1' ? ctx.state.t('login:otp.resent') : undefined;
    await ctx.render(template, { uid, clientName, otpMinutes: Math.round(deps.otpTtlSeconds / 60), notice, ...locals });
  }));

  // The account of the submitted user ID is loaded with the interaction.
  const submittedUserId = (ctx: Context) => {
    const id = normalizeUserId(body(ctx).userId);
    return id && id.length <= USER_ID_MAX ? id : undefined;
  };

  router.post('/:uid/identify', (ctx) => step(ctx, async ({ details, loaded }) => {
    await counted(ctx, details.uid, async (req) => {
      const flow = await flows.begin(details.uid, details.params.client_id, loaded);
      await flows.identify(flow, body(ctx).userId, req, flowUrl(details.uid), requiredMethod(details.params.acr_values));
    });
    ctx.status = 303;
    ctx.redirect(flowUrl(details.uid));
  }, submittedUserId(ctx)));

  // One handler for every factor's form: the flow knows which factor is current (the form's own
  // factor only tells a late repeat of a step already passed).
  router.post(['/:uid/otp', '/:uid/password', '/:uid/certificate', '/:uid/passkey', '/:uid/passkey-discover'], (ctx) => step(ctx, async ({ details, loaded }) => {
    let outcome: Awaited<ReturnType<LoginFlowService['submit']>> | undefined;
    await counted(ctx, details.uid, async (req) => {
      const flow = await flows.begin(details.uid, details.params.client_id, loaded);
      // A passkey that names its account (from the user-ID page): a login without a user ID.
      if (ctx.path.endsWith('/passkey-discover')) {
        outcome = await flows.discover(flow, body(ctx), req, flowUrl(details.uid), requiredMethod(details.params.acr_values));
        return;
      }
      // A finished flow still takes its last answer again (a double click lands after the first).
      if (!flow.state.startsWith('factor:') && flow.state !== 'complete') throw new BadRequestError('common:errors.bad_request', {}, flowUrl(details.uid));
      outcome = await flows.submit(flow, body(ctx), req, flowUrl(details.uid), POSTED_FACTOR[ctx.path.slice(ctx.path.lastIndexOf('/') + 1)]);
    });
    if (!outcome) throw new BadRequestError('common:errors.bad_request', {}, flowUrl(details.uid));
    if ('next' in outcome) {
      ctx.status = 303;
      ctx.redirect(flowUrl(details.uid));
      return;
    }
    await interactions.finishLogin(ctx, outcome);
  }));

  router.post('/:uid/resend', (ctx) => step(ctx, async ({ details, loaded }) => {
    await counted(ctx, details.uid, async (req) => {
      const flow = await flows.begin(details.uid, details.params.client_id, loaded);
      await flows.resend(flow, req, flowUrl(details.uid));
    });
    ctx.status = 303;
    ctx.redirect(`${flowUrl(details.uid)}?resent=1`);
  }));

  router.post('/:uid/restart', (ctx) => step(ctx, async ({ details, loaded }) => {
    const flow = await flows.begin(details.uid, details.params.client_id, loaded);
    await flows.restart(flow);
    ctx.status = 303;
    ctx.redirect(flowUrl(details.uid));
  }));

  router.post('/:uid/consent', async (ctx) => {
    const details = await load(ctx);
    if (details.prompt.name !== 'consent') throw new BadRequestError();
    await interactions.finishConsent(ctx, details);
  });

  router.get('/:uid/abort', async (ctx) => {
    await load(ctx);
    await interactions.abort(ctx);
  });

  return router;
}
