import Router from '@koa/router';
import { limitIp } from '../http/rate-limit.middleware.js';
import type { Context } from 'koa';
import type { TenantDirectory } from '../config/index.js';
import { BadRequestError } from '../http/errors.js';
import type { RateLimits } from '../http/rate-limit.js';
import type { LoginFlowService } from '../login/login-flow.service.js';
import { requiredMethod } from '../login/login-methods.js';
import type { OidcInteractions } from '../oidc/interactions.js';
import type { LoginContextRepository } from '../persistence/login-context.repository.js';
import type { OidcPayloadRepository } from '../persistence/oidc-payload.repository.js';
import { formBody, loadInteraction, requestInfo, withLoginStep } from './interaction-context.js';

/** Login prompt reasons that only mean "the session's method is too weak" (step-up), not "sign in again". */
const STEP_UP_REASONS = new Set(['acr_step_up', 'essential_acr', 'essential_acrs']);

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
  const step = <T>(ctx: Context, handle: Parameters<typeof withLoginStep<T>>[2]) => withLoginStep(ctx, deps, handle);
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
    if (flow.state === 'identify' && sessionAccount && details.prompt.reasons.every((r) => STEP_UP_REASONS.has(r))) {
      const required = requiredMethod(details.params.acr_values);
      await flows.beginStepUp(flow, { accountId: sessionAccount, amr: details.session?.amr ?? [], required }, requestInfo(ctx), flowUrl(uid));
      flow = await flows.begin(uid, details.params.client_id);
    }
    const view = await flows.view(flow, requestInfo(ctx), flowUrl(uid));
    if (view.step === 'identify') {
      const hint = typeof details.params.login_hint === 'string' ? details.params.login_hint.slice(0, 64) : '';
      await ctx.render('login/identify', { uid, clientName, userIdValue: hint });
      return;
    }
    const { view: template, locals } = view.factor.render(view.context);
    const notice = ctx.query.resent === '1' ? ctx.state.t('login:otp.resent') : undefined;
    await ctx.render(template, { uid, clientName, otpMinutes: Math.round(deps.otpTtlSeconds / 60), notice, ...locals });
  }));

  router.post('/:uid/identify', (ctx) => step(ctx, async ({ details, loaded }) => {
    await limitIp(deps.limits, ctx, flowUrl(details.uid));
    const flow = await flows.begin(details.uid, details.params.client_id, loaded);
    await flows.identify(flow, body(ctx).userId, requestInfo(ctx), flowUrl(details.uid), requiredMethod(details.params.acr_values));
    ctx.status = 303;
    ctx.redirect(flowUrl(details.uid));
  }));

  // One handler for every factor's form: the flow knows which factor is current.
  router.post(['/:uid/otp', '/:uid/password', '/:uid/certificate'], (ctx) => step(ctx, async ({ details, loaded }) => {
    await limitIp(deps.limits, ctx, flowUrl(details.uid));
    const flow = await flows.begin(details.uid, details.params.client_id, loaded);
    // A finished flow still takes its last answer again (a double click lands after the first).
    if (!flow.state.startsWith('factor:') && flow.state !== 'complete') throw new BadRequestError('common:errors.bad_request', {}, flowUrl(details.uid));
    const outcome = await flows.submit(flow, body(ctx), requestInfo(ctx), flowUrl(details.uid));
    if ('next' in outcome) {
      ctx.status = 303;
      ctx.redirect(flowUrl(details.uid));
      return;
    }
    await interactions.finishLogin(ctx, outcome);
  }));

  router.post('/:uid/resend', (ctx) => step(ctx, async ({ details, loaded }) => {
    await limitIp(deps.limits, ctx, flowUrl(details.uid));
    const flow = await flows.begin(details.uid, details.params.client_id, loaded);
    await flows.resend(flow, requestInfo(ctx), flowUrl(details.uid));
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
