import Router from '@koa/router';
import type { Context } from 'koa';
import { SECRET_ANSWER_MAX, type RegistrationProblem } from '../../activation/activation.service.js';
import type { AppConfig, TenantDirectory } from '../../config/index.js';
import { clientIp } from '../../http/client-ip.js';
import { sealedBox } from '../../http/sealed-box.js';
import type { AccountRepository } from '../../persistence/account.repository.js';
import type { PreparedSecretQuestion, SecretQuestionService } from '../secret-question.service.js';
import { requireAreaSession, requireFreshAuth, type AreaState } from './area-session.js';

const BASE = '/account/secret-question';
const COOKIE = 'secret_question_change';
/** How long a checked change waits for 変更 on the confirmation page. */
const PENDING_SECONDS = 10 * 60;

/** The change between the form and 変更: sealed in a cookie, so the answer's hash never reaches the page. */
interface PendingChange extends PreparedSecretQuestion {
  sub: string;
  /** Epoch seconds. */
  exp: number;
}

type FieldErrors = Partial<Record<'questionId' | 'answer', string>>;

export interface SecretQuestionRouterDeps {
  config: Pick<AppConfig, 'accountArea'>;
  tenants: TenantDirectory;
  accounts: AccountRepository;
  secretQuestions: SecretQuestionService;
  cookieKeys: string[];
  secure: boolean;
}

/**
 * 秘密の質問・答え変更 (manual chapter 5): form (質問 and 答え) → confirmation (the question only;
 * the answer is never shown again) → 変更 → 完了. Every step but 完了 needs a recent sign-in.
 */
export function secretQuestionRouter(deps: SecretQuestionRouterDeps) {
  const router = new Router({ prefix: '/account' });
  const service = deps.secretQuestions;
  const box = sealedBox(deps.cookieKeys, 'secret-question-change');
  const session = requireAreaSession(deps);
  // A POST cannot be replayed after re-authentication, so it returns to the page it came from.
  const freshForm = requireFreshAuth(deps.config, () => BASE);
  const freshConfirm = requireFreshAuth(deps.config, () => `${BASE}/confirm`);

  const t = (ctx: Context, key: string, params?: Record<string, unknown>): string => (ctx.state.t as (k: string, p?: object) => string)(key, params);
  const field = (ctx: Context, name: string): string => {
    const b = (ctx.request as { body?: unknown }).body;
    const v = b && typeof b === 'object' && !Array.isArray(b) ? (b as Record<string, unknown>)[name] : undefined;
    return typeof v === 'string' ? v : '';
  };

  const cookieOptions = (ctx: Context) => ({ httpOnly: true, sameSite: 'lax' as const, secure: deps.secure && ctx.secure, path: BASE, overwrite: true });

  function readPending(ctx: Context, sub: string): PendingChange | undefined {
    const p = box.open(ctx.cookies.get(COOKIE)) as Partial<PendingChange> | undefined;
    if (!p || p.sub !== sub || typeof p.exp !== 'number' || p.exp * 1000 <= Date.now()) return undefined;
    if (typeof p.questionId !== 'string' || typeof p.answerHash !== 'string') return undefined;
    return p as PendingChange;
  }

  function writePending(ctx: Context, pending: PendingChange | undefined) {
    ctx.cookies.set(COOKIE, pending ? box.seal(pending) : null, { ...cookieOptions(ctx), ...(pending ? { maxAge: PENDING_SECONDS * 1000 } : {}) });
  }

  const questionText = (ctx: Context, id: string | null | undefined) => service.questionsFor(ctx.state.locale).find((q) => q.id === id)?.text;

  async function renderForm(ctx: Context, locals: { questionId?: string | null; errors?: FieldErrors; message?: string }) {
    const area = ctx.state.area as AreaState;
    await ctx.render('account/secret-question/form', {
      pageTitle: t(ctx, 'secret:form.title'),
      area,
      menu: 'secret',
      step: 0,
      questions: service.questionsFor(ctx.state.locale),
      answerMax: SECRET_ANSWER_MAX,
      errors: {},
      ...locals,
      questionId: locals.questionId ?? '',
    });
  }

  const problemMessage = (ctx: Context, p: RegistrationProblem) => t(ctx, `secret:errors.${p.field}_${p.problem}`, { max: SECRET_ANSWER_MAX });

  // The form, with the current question chosen (or the one being changed to, when coming back from confirmation).
  router.get('/secret-question', session, freshForm, async (ctx) => {
    const area = ctx.state.area as AreaState;
    await renderForm(ctx, { questionId: readPending(ctx, area.account.id)?.questionId ?? area.account.secretQuestionId });
  });

  router.post('/secret-question', session, freshForm, async (ctx) => {
    const area = ctx.state.area as AreaState;
    const input = { questionId: field(ctx, 'questionId'), answer: field(ctx, 'answer') };
    const problem = service.check(input);
    if (problem) {
      ctx.status = 400;
      // The chosen question stays; the answer is a secret and is never sent back.
      await renderForm(ctx, { questionId: input.questionId, errors: { [problem.field]: problemMessage(ctx, problem) } });
      return;
    }
    const prepared = await service.prepare(input);
    writePending(ctx, { ...prepared, sub: area.account.id, exp: Math.floor(Date.now() / 1000) + PENDING_SECONDS });
    ctx.status = 303;
    ctx.redirect(`${BASE}/confirm`);
  });

  router.get('/secret-question/confirm', session, freshConfirm, async (ctx) => {
    const area = ctx.state.area as AreaState;
    const pending = readPending(ctx, area.account.id);
    if (!pending) {
      ctx.status = 303;
      ctx.redirect(BASE);
      return;
    }
    await ctx.render('account/secret-question/confirm', {
      pageTitle: t(ctx, 'secret:confirm.title'),
      area,
      menu: 'secret',
      step: 1,
      question: questionText(ctx, pending.questionId) ?? pending.questionId,
    });
  });

  // 変更.
  router.post('/secret-question/confirm', session, freshConfirm, async (ctx) => {
    const area = ctx.state.area as AreaState;
    const pending = readPending(ctx, area.account.id);
    if (!pending) {
      // Expired, or already applied (a second click): start again rather than guess.
      ctx.status = 409;
      await renderForm(ctx, { questionId: area.account.secretQuestionId, message: t(ctx, 'secret:errors.no_pending') });
      return;
    }
    await service.change(area.account, pending, { ip: clientIp(ctx), locale: ctx.state.locale });
    writePending(ctx, undefined);
    ctx.status = 303;
    ctx.redirect(`${BASE}/done`);
  });

  // 完了: shows the question now registered, so it is true whenever it is opened.
  router.get('/secret-question/done', session, async (ctx) => {
    const area = ctx.state.area as AreaState;
    await ctx.render('account/secret-question/done', {
      pageTitle: t(ctx, 'secret:done.title'),
      area,
      menu: 'secret',
      step: 2,
      question: questionText(ctx, area.account.secretQuestionId) ?? '',
    });
  });

  return router;
}
