import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { AppConfig, TenantDirectory } from '../../config/index.js';
import { clientIp } from '../../http/client-ip.js';
import { NotFoundError } from '../../http/errors.js';
import { normalizeOtp } from '../../login/factors/email-otp.factor.js';
import type { AccountRepository } from '../../persistence/account.repository.js';
import { proofTarget, type Device } from '../../persistence/device.repository.js';
import { DEVICE_KINDS } from '../account.service.js';
import { DEVICE_PROOF_MAX_ATTEMPTS, DeviceRuleError, EMAIL_MAX_LENGTH, type CheckedDevice, type DeviceForm, type DeviceRequest, type DeviceService, type FieldProblems } from '../device.service.js';
import { requireAreaSession, requireContract, requireFreshAuth, type AreaState, type ContractFeature } from './area-session.js';

const BASE = '/account/devices';
const CODE_MAX = 20;

type FieldErrors = Partial<Record<'email' | 'emailConfirm' | 'kind' | 'code' | 'form', string>>;
type Mode = 'add' | 'change';

export interface DevicesRouterDeps {
  config: AppConfig;
  tenants: TenantDirectory;
  accounts: AccountRepository;
  devices: DeviceService;
  secure: boolean;
}

/**
 * アカウント管理's device pages (manual appendices 1 and 3): 追加 (端末登録 → 端末登録確認 → the code
 * mailed to the new address → 端末登録完了), 変更 and 削除. Every page and post needs the area session,
 * the contract's feature and a recent sign-in; the rules live in DeviceService.
 */
export function devicesRouter(deps: DevicesRouterDeps) {
  const router = new Router({ prefix: BASE });
  const { devices } = deps;
  const session = requireAreaSession(deps);
  // After re-authenticating, a post comes back to the page it was sent from (the form data is gone).
  const fresh = (back?: (ctx: Context) => string) => requireFreshAuth(deps.config, back);
  const devicePage = (suffix: string) => (ctx: Context) => `${BASE}/${String(ctx.params.number)}/${suffix}`;

  const area = (ctx: Context) => ctx.state.area as AreaState;
  const t = (ctx: Context, key: string, params?: Record<string, unknown>): string => (ctx.state.t as (k: string, p?: object) => string)(key, params);
  const field = (ctx: Context, name: string, max = EMAIL_MAX_LENGTH + 10): string => {
    const b = (ctx.request as { body?: unknown }).body;
    const v = b && typeof b === 'object' && !Array.isArray(b) ? (b as Record<string, unknown>)[name] : undefined;
    return typeof v === 'string' ? v.slice(0, max) : '';
  };
  const request = (ctx: Context): DeviceRequest => ({ ip: clientIp(ctx), locale: ctx.state.locale });
  const formOf = (ctx: Context): DeviceForm => ({ email: field(ctx, 'email'), emailConfirm: field(ctx, 'emailConfirm'), kind: field(ctx, 'kind', 20) });
  const device = (ctx: Context) => ctx.state.device as Device;

  /** The device named by its 端末No in the path, among the signed-in account's own. */
  const loadDevice = async (ctx: Context, next: Next) => {
    const number = Number(ctx.params.number);
    const found = Number.isInteger(number) ? area(ctx).account.devices.find((d) => d.number === number) : undefined;
    if (!found) throw new NotFoundError('devices:errors.not_found');
    ctx.state.device = found;
    return next();
  };

  /** Proving an address belongs to the feature that asked for it: a new device to 追加, a new address to 変更. */
  const proofFeature = (d: Device): ContractFeature => (d.pendingEmail || d.verifiedAt ? 'device_change' : 'device_add');
  const proofContract = (ctx: Context, next: Next) => requireContract(proofFeature(device(ctx)))(ctx, next);

  /** A broken rule (maximum reached, last device, address taken meanwhile) is a page in the area, not a bare error. */
  const rules = async (ctx: Context, next: Next) => {
    try {
      await next();
    } catch (e) {
      if (!(e instanceof DeviceRuleError) || !ctx.state.area) throw e;
      ctx.status = e.status;
      await render(ctx, 'account/devices/message', { pageTitle: t(ctx, 'area:devices.title'), message: t(ctx, e.messageKey, e.params) });
    }
  };

  async function render(ctx: Context, view: string, locals: Record<string, unknown>) {
    const a = area(ctx);
    await ctx.render(view, { area: a, menu: 'devices', contract: a.tenant.contract, ...locals });
  }

  const translate = (ctx: Context, problems: FieldProblems): FieldErrors =>
    Object.fromEntries(Object.entries(problems).map(([k, p]) => [k, t(ctx, p.key, p.params)])) as FieldErrors;

  async function renderForm(ctx: Context, mode: Mode, values: DeviceForm, errors: FieldErrors = {}) {
    const a = area(ctx);
    const d = mode === 'change' ? device(ctx) : undefined;
    await render(ctx, 'account/devices/form', {
      pageTitle: t(ctx, mode === 'add' ? 'devices:add.title' : 'devices:edit.title'),
      mode,
      step: 'form',
      device: d,
      action: d ? `${BASE}/${d.number}/edit` : `${BASE}/new`,
      values,
      errors,
      kinds: DEVICE_KINDS,
      emailMax: EMAIL_MAX_LENGTH,
      max: a.tenant.contract.max_devices,
      count: a.account.devices.length,
    });
  }

  async function renderConfirm(ctx: Context, mode: Mode, value: CheckedDevice) {
    const d = mode === 'change' ? device(ctx) : undefined;
    const what = d ? devices.changeOf(d, value) : { newAddress: true, newKind: false, backToCurrent: false };
    await render(ctx, 'account/devices/confirm', {
      pageTitle: t(ctx, mode === 'add' ? 'devices:confirm.add_title' : 'devices:confirm.change_title'),
      mode,
      step: 'confirm',
      device: d,
      value,
      newAddress: what.newAddress,
      action: d ? `${BASE}/${d.number}/edit/confirm` : `${BASE}/new/confirm`,
    });
  }

  async function renderVerify(ctx: Context, locals: { errors?: FieldErrors; message?: string; notice?: string }) {
    const d = device(ctx);
    const target = proofTarget(d);
    // The current code's mail was given up (e.g. the address's mail server refused it): say so, here.
    const undelivered = target && (await deps.devices.undelivered(area(ctx).account, d)) ? t(ctx, 'devices:verify.undelivered', { email: target }) : undefined;
    await render(ctx, 'account/devices/verify', {
      pageTitle: t(ctx, 'devices:verify.title'),
      mode: d.verifiedAt ? 'change' : 'add',
      step: 'verify',
      device: d,
      target,
      undelivered,
      minutes: Math.round(deps.config.otp.ttlSeconds / 60),
      otpLength: deps.config.otp.length,
      action: `${BASE}/${d.number}`,
      errors: {},
      ...locals,
    });
  }

  // 追加 → 端末登録: the form, refused when the contract's maximum is reached.
  router.get('/new', session, requireContract('device_add'), fresh(), rules, async (ctx) => {
    const a = area(ctx);
    if (!devices.canAdd(a.account, a.tenant.contract)) throw new DeviceRuleError('devices:errors.too_many', { max: a.tenant.contract.max_devices });
    await renderForm(ctx, 'add', { email: '', emailConfirm: '', kind: 'pc' });
  });

  // 確認 → 端末登録確認, or the form again with what is wrong.
  router.post('/new', session, requireContract('device_add'), fresh(() => `${BASE}/new`), rules, async (ctx) => {
    const a = area(ctx);
    if (!devices.canAdd(a.account, a.tenant.contract)) throw new DeviceRuleError('devices:errors.too_many', { max: a.tenant.contract.max_devices });
    const form = formOf(ctx);
    const checked = devices.check(a.account, form);
    if (!checked.ok) {
      ctx.status = 400;
      await renderForm(ctx, 'add', form, translate(ctx, checked.problems));
      return;
    }
    await renderConfirm(ctx, 'add', checked.value);
  });

  // 登録 creates the device unproven and mails a code to it; 戻る goes back to the filled-in form.
  router.post('/new/confirm', session, requireContract('device_add'), fresh(() => `${BASE}/new`), rules, async (ctx) => {
    const a = area(ctx);
    const form: DeviceForm = { email: field(ctx, 'email'), emailConfirm: field(ctx, 'email'), kind: field(ctx, 'kind', 20) };
    const checked = devices.check(a.account, form);
    if (field(ctx, 'op', 20) === 'back' || !checked.ok) {
      if (!checked.ok) ctx.status = 400;
      await renderForm(ctx, 'add', form, checked.ok ? {} : translate(ctx, checked.problems));
      return;
    }
    const added = await devices.add(a.account, a.tenant.contract, checked.value, request(ctx));
    ctx.status = 303;
    ctx.redirect(`${BASE}/${added.number}/verify`);
  });

  // メールアドレス確認: the code mailed to the new address.
  router.get('/:number/verify', session, loadDevice, proofContract, fresh(), rules, async (ctx) => {
    if (!proofTarget(device(ctx))) {
      ctx.status = 303;
      ctx.redirect('/account/');
      return;
    }
    await renderVerify(ctx, { notice: ctx.query.sent === '1' ? t(ctx, 'devices:verify.resent') : undefined });
  });

  router.post('/:number/verify', session, loadDevice, proofContract, fresh(devicePage('verify')), rules, async (ctx) => {
    const a = area(ctx);
    const d = device(ctx);
    // Full-width digits, spaces and hyphens from a pasted code are forgiven, as at login.
    const code = normalizeOtp(field(ctx, 'code', CODE_MAX)) ?? '';
    if (!code || !/^\d{6,12}$/.test(code)) {
      ctx.status = 400;
      await renderVerify(ctx, { errors: { code: t(ctx, code ? 'devices:errors.code_format' : 'devices:errors.code_required') } });
      return;
    }
    const out = await devices.prove(a.account, d, code, request(ctx));
    switch (out.result) {
      case 'ok':
        ctx.status = 303;
        ctx.redirect(`${BASE}/${out.device.number}/done?op=${out.op}`);
        return;
      case 'wrong':
        ctx.status = 401;
        await renderVerify(ctx, { errors: { code: t(ctx, 'devices:errors.code_wrong', { left: out.attemptsLeft }) } });
        return;
      case 'expired':
      case 'none':
        ctx.status = 400;
        await renderVerify(ctx, { errors: { code: t(ctx, `devices:errors.code_${out.result}`) } });
        return;
      case 'exhausted':
        ctx.status = 409;
        await render(ctx, 'account/devices/message', { pageTitle: t(ctx, 'devices:verify.title'), message: t(ctx, 'devices:errors.exhausted', { max: DEVICE_PROOF_MAX_ATTEMPTS }) });
        return;
    }
  });

  router.post('/:number/resend', session, loadDevice, proofContract, fresh(devicePage('verify')), rules, async (ctx) => {
    const d = device(ctx);
    await devices.resend(area(ctx).account, d, request(ctx), `${BASE}/${d.number}/verify`);
    ctx.status = 303;
    ctx.redirect(`${BASE}/${d.number}/verify?sent=1`);
  });

  // 手続きを取り消す: an unproven device goes away, a pending address is dropped.
  router.post('/:number/cancel', session, loadDevice, proofContract, fresh(devicePage('verify')), rules, async (ctx) => {
    await devices.cancel(area(ctx).account, device(ctx), request(ctx));
    await render(ctx, 'account/devices/done', { pageTitle: t(ctx, 'devices:done.cancelled_title'), title: t(ctx, 'devices:done.cancelled_title'), text: t(ctx, 'devices:done.cancelled') });
  });

  // 端末登録完了 / 端末情報変更完了.
  router.get('/:number/done', session, loadDevice, (ctx, next) => requireContract(ctx.query.op === 'added' ? 'device_add' : 'device_change')(ctx, next), fresh(), async (ctx) => {
    const d = device(ctx);
    const added = ctx.query.op === 'added';
    await render(ctx, 'account/devices/done', {
      pageTitle: t(ctx, added ? 'devices:done.added_title' : 'devices:done.changed_title'),
      title: t(ctx, added ? 'devices:done.added_title' : 'devices:done.changed_title'),
      text: t(ctx, added ? 'devices:done.added' : 'devices:done.changed'),
      mode: added ? 'add' : 'change',
      step: 'done',
      device: d,
    });
  });

  // 変更: the form starts with the device as it is (the address to be proven, if one is waiting).
  router.get('/:number/edit', session, requireContract('device_change'), fresh(), loadDevice, rules, async (ctx) => {
    const d = device(ctx);
    const email = d.pendingEmail ?? d.email;
    await renderForm(ctx, 'change', { email, emailConfirm: email, kind: d.kind });
  });

  router.post('/:number/edit', session, requireContract('device_change'), fresh(devicePage('edit')), loadDevice, rules, async (ctx) => {
    const d = device(ctx);
    const form = formOf(ctx);
    const checked = devices.check(area(ctx).account, form, d);
    const what = checked.ok ? devices.changeOf(d, checked.value) : undefined;
    if (!checked.ok || !what || (!what.newAddress && !what.newKind && !what.backToCurrent)) {
      ctx.status = 400;
      await renderForm(ctx, 'change', form, checked.ok ? { form: t(ctx, 'devices:errors.nothing_changed') } : translate(ctx, checked.problems));
      return;
    }
    await renderConfirm(ctx, 'change', checked.value);
  });

  router.post('/:number/edit/confirm', session, requireContract('device_change'), fresh(devicePage('edit')), loadDevice, rules, async (ctx) => {
    const d = device(ctx);
    const form: DeviceForm = { email: field(ctx, 'email'), emailConfirm: field(ctx, 'email'), kind: field(ctx, 'kind', 20) };
    const checked = devices.check(area(ctx).account, form, d);
    if (field(ctx, 'op', 20) === 'back' || !checked.ok) {
      if (!checked.ok) ctx.status = 400;
      await renderForm(ctx, 'change', form, checked.ok ? {} : translate(ctx, checked.problems));
      return;
    }
    const out = await devices.change(area(ctx).account, d, checked.value, request(ctx));
    ctx.status = 303;
    ctx.redirect(out.needsProof ? `${BASE}/${out.device.number}/verify` : `${BASE}/${out.device.number}/done?op=changed`);
  });

  // 削除: a confirmation first; the last device (or the last proven one) says why it can't go.
  router.get('/:number/delete', session, requireContract('device_delete'), fresh(), loadDevice, rules, async (ctx) => {
    const d = device(ctx);
    const problem = devices.deleteProblem(area(ctx).account, d);
    await render(ctx, 'account/devices/delete', {
      pageTitle: t(ctx, 'devices:delete.title'),
      device: d,
      problem: problem ? t(ctx, problem) : undefined,
      action: `${BASE}/${d.number}/delete`,
    });
  });

  router.post('/:number/delete', session, requireContract('device_delete'), fresh(devicePage('delete')), loadDevice, rules, async (ctx) => {
    const removed = await devices.remove(area(ctx).account, device(ctx), request(ctx));
    await render(ctx, 'account/devices/done', {
      pageTitle: t(ctx, 'devices:done.deleted_title'),
      title: t(ctx, 'devices:done.deleted_title'),
      text: t(ctx, 'devices:done.deleted', { number: removed.number, email: removed.email }),
    });
  });

  return router;
}
