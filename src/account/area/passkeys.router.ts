import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { AppConfig, TenantDirectory } from '../../config/index.js';
import { formatEventTime } from '../../history/event-time.js';
import { clientIp } from '../../http/client-ip.js';
import { AppError, ForbiddenError, NotFoundError } from '../../http/errors.js';
import type { AccountRepository } from '../../persistence/account.repository.js';
import type { Passkey } from '../../persistence/passkey.repository.js';
import { PASSKEY_NAME_MAX } from '../../passkey/passkey.service.js';
import { passkeysOffered, type AccountPasskeyService, type PasskeyRequest } from '../account-passkey.service.js';
import { requireAreaSession, requireFreshAuth, type AreaState } from './area-session.js';

const BASE = '/account/passkeys';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** What the list page says after a change (`?done=`). */
const DONE = ['registered', 'renamed', 'deleted'] as const;

export interface PasskeysRouterDeps {
  config: Pick<AppConfig, 'accountArea'>;
  tenants: TenantDirectory;
  accounts: AccountRepository;
  passkeys: AccountPasskeyService;
  secure: boolean;
}

/**
 * パスキー (account area): the account's passkeys (name, created, last used, device), 登録 (a name,
 * optionally one of the account's devices, then the browser's ceremony), 名前の変更 and 削除 (with a
 * confirmation page). Registration and deletion need a recent sign-in; only the tenant whose contract
 * allows a passkey method has these pages.
 */
export function passkeysRouter(deps: PasskeysRouterDeps) {
  const router = new Router({ prefix: BASE });
  const session = requireAreaSession(deps);
  const area = (ctx: Context) => ctx.state.area as AreaState;
  const t = (ctx: Context, key: string, params?: Record<string, unknown>): string => (ctx.state.t as (k: string, p?: object) => string)(key, params);
  const field = (ctx: Context, name: string, max: number): string => {
    const b = (ctx.request as { body?: unknown }).body;
    const v = b && typeof b === 'object' && !Array.isArray(b) ? (b as Record<string, unknown>)[name] : undefined;
    return typeof v === 'string' ? v.slice(0, max) : '';
  };
  const request = (ctx: Context): PasskeyRequest => ({ ip: clientIp(ctx), locale: ctx.state.locale });
  // A ceremony belongs to the area session that started it (its provider session's uid).
  const binding = (ctx: Context) => `account-area:${area(ctx).session.sessionUid ?? area(ctx).session.sid ?? area(ctx).session.sub}`;
  const passkey = (ctx: Context) => ctx.state.passkey as Passkey;

  /** The pages exist only for a contract with a passkey method; a forged request otherwise is a 403. */
  const offered = async (ctx: Context, next: Next) => {
    if (!passkeysOffered(area(ctx).tenant)) throw new ForbiddenError('area:errors.not_in_contract');
    return next();
  };

  /** The passkey named in the path, among the signed-in account's own: anything else is a 404. */
  const loadPasskey = async (ctx: Context, next: Next) => {
    const id = String(ctx.params.id ?? '');
    const found = UUID.test(id) ? (await deps.passkeys.list(area(ctx).account.id)).find((p) => p.id === id) : undefined;
    if (!found) throw new NotFoundError('passkey:area.errors.not_found');
    ctx.state.passkey = found;
    return next();
  };

  /** Broken rules and the ceremony's own errors are shown in the area, on the page they came from. */
  const inArea = (view: (ctx: Context) => Promise<void>) => async (ctx: Context, next: Next) => {
    try {
      await next();
    } catch (e) {
      if (!(e instanceof AppError) || e.status >= 500 || e instanceof NotFoundError || !ctx.state.area) throw e;
      ctx.status = e.status;
      ctx.state.problem = t(ctx, e.messageKey, e.params);
      await view(ctx);
    }
  };

  async function render(ctx: Context, view: string, locals: Record<string, unknown>) {
    const time = (d: Date | null) => (d ? formatEventTime(d, ctx.state.locale) : null);
    await ctx.render(`account/passkeys/${view}`, { area: area(ctx), menu: 'passkeys', nameMax: PASSKEY_NAME_MAX, problem: ctx.state.problem, time, ...locals });
  }

  const deviceNumber = (ctx: Context, p: Passkey) => area(ctx).account.devices.find((d) => d.id === p.deviceId)?.number ?? null;

  async function renderList(ctx: Context) {
    const list = await deps.passkeys.list(area(ctx).account.id);
    const done = DONE.find((d) => d === ctx.query.done);
    await render(ctx, 'index', {
      pageTitle: t(ctx, 'passkey:area.title'),
      passkeys: list.map((p) => ({ ...p, deviceNumber: deviceNumber(ctx, p) })),
      done: done ? t(ctx, `passkey:area.done.${done}`) : undefined,
    });
  }

  async function renderNew(ctx: Context, values: { name?: string; device?: string } = {}) {
    const options = await deps.passkeys.registrationOptions(area(ctx).account, binding(ctx));
    await render(ctx, 'new', { pageTitle: t(ctx, 'passkey:area.new.title'), options: JSON.stringify(options).replace(/</g, '\\u003c'), values });
  }

  const renderRename = (ctx: Context) => render(ctx, 'rename', { pageTitle: t(ctx, 'passkey:area.rename.title'), passkey: passkey(ctx), deviceNumber: deviceNumber(ctx, passkey(ctx)) });

  async function renderDelete(ctx: Context) {
    const last = await deps.passkeys.isLastNeeded(area(ctx).account, area(ctx).tenant);
    // A refusal shown by the POST wins; otherwise the page says at once when the passkey cannot go.
    if (last && !ctx.state.problem) ctx.state.problem = t(ctx, 'passkey:area.errors.last_passkey');
    await render(ctx, 'delete', { pageTitle: t(ctx, 'passkey:area.delete.title'), passkey: passkey(ctx), deviceNumber: deviceNumber(ctx, passkey(ctx)), refused: last });
  }

  const done = (ctx: Context, what: (typeof DONE)[number]) => {
    ctx.status = 303;
    ctx.redirect(`${BASE}?done=${what}`);
  };

  router.get('/', session, offered, async (ctx) => renderList(ctx));

  // 登録: the form with the ceremony's options; the ceremony runs in the browser on submit.
  router.get('/new', session, offered, requireFreshAuth(deps.config), async (ctx) => renderNew(ctx));

  router.post(
    '/new',
    session,
    offered,
    requireFreshAuth(deps.config, () => `${BASE}/new`),
    inArea((ctx) => renderNew(ctx, { name: field(ctx, 'name', PASSKEY_NAME_MAX * 2), device: field(ctx, 'device', 10) })),
    async (ctx) => {
      const a = area(ctx);
      const device = deps.passkeys.deviceOf(a.account, field(ctx, 'device', 10));
      if (device === undefined) throw new AppError('invalid_input', 400, 'passkey:area.errors.device_unknown');
      await deps.passkeys.register(a.account, binding(ctx), field(ctx, 'response', 65_536), { name: field(ctx, 'name', PASSKEY_NAME_MAX * 2), deviceId: device?.id ?? null }, request(ctx), `${BASE}/new`);
      done(ctx, 'registered');
    },
  );

  router.get('/:id/rename', session, offered, loadPasskey, async (ctx) => renderRename(ctx));

  router.post('/:id/rename', session, offered, loadPasskey, inArea(renderRename), async (ctx) => {
    if (!(await deps.passkeys.rename(area(ctx).account, passkey(ctx).id, field(ctx, 'name', PASSKEY_NAME_MAX * 2), request(ctx)))) throw new NotFoundError('passkey:area.errors.not_found');
    done(ctx, 'renamed');
  });

  // 削除: what will go, and a button only when it may go.
  router.get('/:id/delete', session, offered, requireFreshAuth(deps.config), loadPasskey, async (ctx) => renderDelete(ctx));

  router.post(
    '/:id/delete',
    session,
    offered,
    requireFreshAuth(deps.config, (ctx) => `${BASE}/${String(ctx.params.id)}/delete`),
    loadPasskey,
    inArea(renderDelete),
    async (ctx) => {
      // LastPasskeyError: the confirmation page again, saying why.
      if (!(await deps.passkeys.delete(area(ctx).account, area(ctx).tenant, passkey(ctx).id, request(ctx)))) throw new NotFoundError('passkey:area.errors.not_found');
      done(ctx, 'deleted');
    },
  );

  return router;
}
