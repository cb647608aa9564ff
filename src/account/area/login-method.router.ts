import Router from '@koa/router';
import type { Context } from 'koa';
import type { AppConfig, LoginMethod, TenantDirectory } from '../../config/index.js';
import type { CertificateService } from '../../certificates/certificate.service.js';
import { clientIp } from '../../http/client-ip.js';
import { BadRequestError, ForbiddenError, NotFoundError } from '../../http/errors.js';
import type { AccountRepository } from '../../persistence/account.repository.js';
import type { AccountEventService } from '../account-event.service.js';
import type { LoginMethodService, MethodChangeProblem } from '../login-method.service.js';
import { requireAreaSession, requireFreshAuth, type AreaState } from './area-session.js';

const body = (ctx: Context): Record<string, unknown> => {
  const b = (ctx.request as { body?: unknown }).body;
  return b && typeof b === 'object' && !Array.isArray(b) ? (b as Record<string, unknown>) : {};
};
const str = (v: unknown) => (typeof v === 'string' ? v : undefined);

/**
 * ログイン方法の変更 (manual appendix 2: ログイン方法の選択 → 確認 → 完了) and the devices'
 * certificate downloads and renewals (the certificate columns of the device table).
 */
export function loginMethodRouter(deps: {
  config: AppConfig;
  tenants: TenantDirectory;
  accounts: AccountRepository;
  methods: LoginMethodService;
  certificates: CertificateService;
  events: AccountEventService;
  secure: boolean;
}) {
  const router = new Router({ prefix: '/account' });
  const session = requireAreaSession(deps);
  const fresh = requireFreshAuth(deps.config, () => '/account/login-method');
  const area = (ctx: Context) => ctx.state.area as AreaState;

  /** The feature exists only when the contract offers a choice; a forged request otherwise is a 403. */
  const offered = async (ctx: Context, next: () => Promise<unknown>) => {
    if (deps.methods.choices(area(ctx).tenant).length === 0) throw new ForbiddenError('area:errors.not_in_contract');
    return next();
  };

  async function renderChoose(ctx: Context, selected: string, problem?: MethodChangeProblem) {
    const { account, tenant } = area(ctx);
    ctx.status = problem ? 400 : 200;
    const { choices, withheld } = await deps.methods.choicesFor(account, tenant);
    await ctx.render('account/login-method/choose', {
      area: area(ctx),
      menu: 'method',
      choices,
      withheld,
      currentMethodName: deps.methods.current(account, tenant),
      selected,
      problem,
    });
  }

  async function renderConfirm(ctx: Context, to: LoginMethod, problem?: MethodChangeProblem) {
    const { account, tenant } = area(ctx);
    ctx.status = problem ? 400 : 200;
    await ctx.render('account/login-method/confirm', {
      area: area(ctx),
      menu: 'method',
      from: deps.methods.current(account, tenant),
      to,
      needsPassword: deps.methods.needsPassword(to),
      needsCertificate: deps.methods.needsCertificate(to),
      needsPasskey: deps.methods.needsPasskey(to),
      passwordMinLength: deps.config.passwordMinLength,
      problem,
    });
  }

  router.get('/login-method', session, offered, fresh, async (ctx) => {
    await renderChoose(ctx, deps.methods.current(area(ctx).account, area(ctx).tenant));
  });

  // 次へ: the confirmation page (before/after, user ID, devices; a new password when the method has one).
  router.post('/login-method', session, offered, fresh, async (ctx) => {
    const method = str(body(ctx).method);
    const { account, tenant } = area(ctx);
    if (!method || !deps.methods.choices(tenant).includes(method as LoginMethod)) return renderChoose(ctx, method ?? '', { field: 'method', problem: 'not_allowed' });
    const problem = await deps.methods.checkFor(account, tenant, method, undefined, undefined);
    if (problem?.field === 'method') return renderChoose(ctx, method, problem);
    await renderConfirm(ctx, method as LoginMethod);
  });

  // 実行
  router.post('/login-method/execute', session, offered, fresh, async (ctx) => {
    const { account, tenant } = area(ctx);
    const b = body(ctx);
    const method = str(b.method);
    const problem = await deps.methods.checkFor(account, tenant, method, str(b.password), str(b.confirm));
    if (problem?.field === 'method') return renderChoose(ctx, method ?? '', problem);
    if (problem) return renderConfirm(ctx, method as LoginMethod, problem);
    const result = await deps.methods.change(account, tenant, method as LoginMethod, str(b.password), { ip: clientIp(ctx), locale: ctx.state.locale, sessionUid: area(ctx).session.sessionUid });
    await ctx.render('account/login-method/done', {
      area: { ...area(ctx), account: (await deps.accounts.findById(account.id)) ?? account },
      menu: 'method',
      result,
    });
  });

  // The device's certificate as a PKCS#12 file (key, certificate, CA chain), protected by its download password.
  router.get('/devices/:number/certificate', session, requireFreshAuth(deps.config), async (ctx) => {
    const device = area(ctx).account.devices.find((d) => String(d.number) === ctx.params.number);
    if (!device) throw new NotFoundError();
    const file = await deps.certificates.pkcs12For(area(ctx).account.id, device.id);
    if (!file) throw new NotFoundError();
    ctx.set('Content-Disposition', `attachment; filename="${file.filename}"`);
    ctx.type = file.contentType;
    ctx.body = file.data;
  });

  // Renewal before expiry: a new certificate and download password; the old certificate is revoked.
  router.post('/devices/:number/certificate/renew', session, requireFreshAuth(deps.config, () => '/account/'), async (ctx) => {
    const { account, tenant } = area(ctx);
    const device = account.devices.find((d) => String(d.number) === ctx.params.number);
    if (!device) throw new NotFoundError();
    if (!deps.methods.needsCertificate(deps.methods.current(account, tenant))) throw new BadRequestError('method:errors.no_certificate_method');
    const current = (await deps.certificates.listForAccount(account.id)).find((c) => c.deviceId === device.id && c.status === 'valid');
    if (current && !current.renewable) throw new BadRequestError('method:errors.not_renewable');
    await deps.certificates.renew(account.id, device.id);
    await deps.events.record({ tenantId: account.tenantId, accountId: account.id, type: 'certificate_renewed', actor: 'user', sourceIp: clientIp(ctx), detail: { device: device.number } });
    ctx.status = 303;
    ctx.redirect('/account/');
  });

  return router;
}
