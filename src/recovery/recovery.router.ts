import Router from '@koa/router';
import { limitIp } from '../http/rate-limit.middleware.js';
import type { Context } from 'koa';
import type { TenantDirectory } from '../config/index.js';
import { BadRequestError, NotFoundError } from '../http/errors.js';
import type { RateLimits } from '../http/rate-limit.js';
import { formBody, loadInteraction, requestInfo } from '../interaction/interaction-context.js';
import type { InteractionDetails, OidcInteractions } from '../oidc/interactions.js';
import { RecoveryFieldError } from './recovery-errors.js';
import { RECOVERY_PAGES, RECOVERY_STEPS, stepOf, type RecoveryService, type RecoveryStep } from './recovery.service.js';

/**
 * The "can't log in?" screens. They live under /interaction/:uid/ because oidc-provider scopes the
 * interaction cookie to that path, and a recovery belongs to the login it was started from. One GET
 * page per step (a stale step's URL redirects to the current one) and one POST per step; the order
 * is the service's business.
 */
export function recoveryRouter(deps: { interactions: OidcInteractions; recovery: RecoveryService; tenants: TenantDirectory; limits: RateLimits }) {
  const router = new Router();
  const { recovery } = deps;
  const base = (uid: string) => `/interaction/${uid}/recovery`;

  async function load(ctx: Context): Promise<InteractionDetails> {
    const details = await loadInteraction(ctx, deps.interactions);
    // Recovery leads back to a login; a consent prompt has nothing to recover.
    if (details.prompt.name !== 'login') throw new BadRequestError('common:errors.bad_request', {}, `/interaction/${details.uid}`);
    return details;
  }

  const flowOf = (details: InteractionDetails) => recovery.begin(details.uid, details.params.client_id);

  /** Renders the flow's current step, with a field error when the last POST had one. */
  async function renderStep(ctx: Context, details: InteractionDetails, error?: RecoveryFieldError, values: Record<string, string> = {}) {
    const uid = details.uid;
    const flow = await flowOf(details);
    const view = await recovery.view(flow, ctx.state.locale);
    const t = ctx.state.t as (key: string, params?: object) => string;
    await ctx.render(`recovery/${view.step}`, {
      ...view,
      uid,
      base: base(uid),
      clientName: deps.tenants.client(details.params.client_id)?.client.name,
      steps: RECOVERY_STEPS,
      // A new passkey takes the password's place (再設定) in the step indicator.
      current: view.step === 'passkey' ? 'password' : view.step,
      pageTitle: t('recovery:title'),
      error: error ? { field: error.field, message: t(error.messageKey, error.params) } : undefined,
      values,
      notice: ctx.query.resent === '1' && view.step === 'code' ? t('recovery:code.resent') : undefined,
    });
  }

  /**
   * Runs one POST: on success redirects to the (new) current step (with the query string the action
   * returns), on a field error shows the form again.
   */
  function post(action: (ctx: Context, details: InteractionDetails) => Promise<string | void>, keep: string[] = []) {
    return async (ctx: Context) => {
      const details = await load(ctx);
      await limitIp(deps.limits, ctx, base(details.uid));
      try {
        const query = await action(ctx, details);
        const flow = await flowOf(details);
        ctx.status = 303;
        ctx.redirect(`${base(details.uid)}/${stepOf(flow.state)}${query ?? ''}`);
      } catch (e) {
        if (!(e instanceof RecoveryFieldError)) throw e;
        const body = formBody(ctx);
        // Only harmless fields are echoed back (never a code, an answer or a password).
        const values = Object.fromEntries(keep.map((k) => [k, typeof body[k] === 'string' ? body[k].slice(0, 64) : '']));
        ctx.status = e.status;
        await renderStep(ctx, details, e, values);
      }
    };
  }

  router.get('/interaction/:uid/recovery', async (ctx) => {
    const details = await load(ctx);
    const flow = await flowOf(details);
    ctx.status = 303;
    ctx.redirect(`${base(details.uid)}/${stepOf(flow.state)}`);
  });

  router.get('/interaction/:uid/recovery/:step', async (ctx) => {
    const step = ctx.params.step ?? '';
    if (!(RECOVERY_PAGES as readonly string[]).includes(step)) throw new NotFoundError();
    const details = await load(ctx);
    const flow = await flowOf(details);
    const current = stepOf(flow.state);
    if ((step as RecoveryStep) !== current) {
      // An old tab or the back button: show where the flow really is.
      ctx.status = 303;
      ctx.redirect(`${base(details.uid)}/${current}`);
      return;
    }
    try {
      await recovery.assertCodeDelivered(flow);
    } catch (e) {
      if (!(e instanceof RecoveryFieldError)) throw e;
      ctx.status = e.status;
      await renderStep(ctx, details, e);
      return;
    }
    await renderStep(ctx, details);
  });

  router.post(
    '/interaction/:uid/recovery/identify',
    post(async (ctx, details) => recovery.identify(await flowOf(details), formBody(ctx).userId, requestInfo(ctx), base(details.uid)), ['userId']),
  );

  router.post(
    '/interaction/:uid/recovery/code',
    post(async (ctx, details) => recovery.verifyCode(await flowOf(details), formBody(ctx), requestInfo(ctx), base(details.uid))),
  );

  router.post(
    '/interaction/:uid/recovery/resend',
    post(async (ctx, details) => {
      await recovery.resend(await flowOf(details), requestInfo(ctx), base(details.uid));
      return '?resent=1';
    }),
  );

  router.post(
    '/interaction/:uid/recovery/question',
    post(async (ctx, details) => {
      await recovery.answer(await flowOf(details), formBody(ctx), requestInfo(ctx), base(details.uid));
    }),
  );

  router.post(
    '/interaction/:uid/recovery/password',
    post(async (ctx, details) => recovery.setPassword(await flowOf(details), formBody(ctx), requestInfo(ctx), base(details.uid))),
  );

  router.post(
    '/interaction/:uid/recovery/passkey',
    post(async (ctx, details) => recovery.registerPasskey(await flowOf(details), formBody(ctx), requestInfo(ctx), base(details.uid)), ['name']),
  );

  router.post(
    '/interaction/:uid/recovery/restart',
    post(async (_ctx, details) => recovery.restart(await flowOf(details))),
  );

  return router;
}
