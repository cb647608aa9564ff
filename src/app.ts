import { bodyParser } from '@koa/bodyparser';
import type Router from '@koa/router';
import Koa from 'koa';
import mount from 'koa-mount';
import serve from 'koa-static';
import views from 'koa-views';
import { join } from 'node:path';
import { createAppServices, type AppServices, type AppServicesOptions } from './services.js';
import { csrf } from './http/csrf.js';
import { errorHandler } from './http/error-handler.js';
import { MethodNotAllowedError } from './http/errors.js';
import { vendorAssets } from './http/vendor-assets.js';
import { inputGuard, parsedBodyGuard } from './http/input-guard.js';
import { locale } from './http/locale.js';
import { VIEWS_DIR } from './http/pages.js';
import { interactionRouter } from './interaction/interaction.router.js';
import { certificateRouter } from './certificates/certificate.router.js';
import { devMailboxRouter } from './mail/dev-mailbox.router.js';
import { acceptsHttpPost, type Provider } from './oidc/provider.js';
import { invalidGrantResponse } from './oidc/adapter.js';
import { SingleUseLost } from './persistence/oidc-payload.repository.js';
import { demoRouter } from './demo/demo.router.js';
import { activationRouter } from './activation/activation.router.js';
import { healthRouter } from './http/health.router.js';
import { metricsEndpoint } from './http/metrics.js';
import { securityHeaders } from './http/security-headers.js';
import { requestContext } from './http/request-id.js';
import { accountAreaRouter } from './account/area/account-area.router.js';
import { devicesRouter } from './account/area/devices.router.js';
import { dropEndedAreaSessions } from './account/area/area-session.js';
import { sessionsRouter } from './account/area/sessions.router.js';
import { loginMethodRouter } from './account/area/login-method.router.js';
import { passkeysRouter } from './account/area/passkeys.router.js';
import { secretQuestionRouter } from './account/area/secret-question.router.js';
import { historyRouter } from './account/area/history.router.js';
import { recoveryRouter } from './recovery/recovery.router.js';
import { managementRouter } from './admin/management.router.js';
import { consoleRouter } from './console/console.router.js';
import { consoleActionsRouter } from './console/console-actions.router.js';
import { consoleSupportDeskRouter } from './console/console-support-desk.router.js';
import { renderProblem } from './admin/problem.js';

/** Path prefixes served by our own routers; everything else belongs to oidc-provider. */
const OWN_PREFIXES = ['/interaction', '/demo', '/dev', '/static', '/account', '/activation', '/recovery', '/api', '/health', '/certificates', '/console'];
const isOwn = (path: string) => OWN_PREFIXES.some((p) => path === p || path.startsWith(`${p}/`));

export type { AppServices };

export interface App {
  koa: Koa;
  provider: Provider;
  services: AppServices;
  /** Stops background work (mail queue, rate-limit store). The database is the caller's. */
  close(): Promise<void>;
}

/** What the application is built from: the same as its services. */
export type CreateAppOptions = AppServicesOptions;

/** Builds the whole HTTP application: OIDC endpoints, login screens, demo site and dev tools. */
export async function createApp(opts: CreateAppOptions): Promise<App> {
  const { config, db, logger } = opts;
  // Every service is built in one place (src/services.ts); here only the HTTP pipeline and the routers.
  const services = await createAppServices(opts);
  const { tenants, secrets, accounts, events, payloads, devMail, accountEvents, activation, accountService, mail, loginEvents, limits, provider, interactions } = services;
  const { clientCertificate, metrics, scrapedMetrics, redisHealth } = services;

  const koa = new Koa();
  koa.keys = provider.keys; // the provider's signer: one set of cookie keys (docs/architecture.md)
  koa.proxy = config.trustProxy;
  koa.silent = true; // errors are logged by errorHandler
  const secure = config.issuer.startsWith('https:');

  // First: the request id and the request's log line and timing cover everything after it.
  koa.use(requestContext({ logger, metrics }));
  // Browsers enforce form-action on the redirects that follow a form post, so the relying sites'
  // redirect targets must be allowed too.
  const formTargets = new Set<string>(["'self'"]);
  // The certificate step hops between the issuer and the mutual-TLS listener.
  for (const u of [config.issuer, config.certificates.mtls.url]) if (u) formTargets.add(new URL(u).origin);
  for (const t of config.tenants)
    for (const c of t.clients) for (const u of [...c.redirect_uris, ...c.post_logout_redirect_uris]) formTargets.add(new URL(u).origin);

  koa.use(
    securityHeaders({
      contentSecurityPolicy: {
        useDefaults: true,
        directives: { 'form-action': [...formTargets], 'upgrade-insecure-requests': secure ? [] : null, 'script-src': ["'self'"] },
      },
      strictTransportSecurity: secure,
    }),
  );
  koa.use(async (ctx, next) => {
    await next();
    if (isOwn(ctx.path) && !ctx.path.startsWith('/static')) ctx.set('Cache-Control', 'no-store');
  });
  // Compiled templates are cached outside development (compiling pug on every request costs ms).
  koa.use(views(VIEWS_DIR, { extension: 'pug', options: { basedir: VIEWS_DIR, cache: config.env !== 'development' } }));
  // koa-views looks a view up on disk before each render, first without the extension (a failing
  // stat) and then with it: naming the file saves the failing look-up on every page.
  koa.use(async (ctx, next) => {
    const render = ctx.render;
    ctx.render = (view, locals) => render(view.endsWith('.pug') ? view : `${view}.pug`, locals);
    await next();
  });
  koa.use(locale());
  koa.use(async (ctx, next) => {
    const presented = clientCertificate(ctx.req);
    if (presented) ctx.state.clientCertificate = presented;
    return next();
  });
  koa.use(errorHandler(logger, [renderProblem])); // problem+json under /api/v1
  koa.use(metricsEndpoint({ metrics: scrapedMetrics, token: config.metricsToken }));
  // PostgreSQL refuses a NUL byte: such input is the client's mistake (400), never a query error.
  koa.use(inputGuard({ isProviderPath: (path) => !isOwn(path) }));
  koa.use(vendorAssets());
  koa.use(mount('/static', serve(join(VIEWS_DIR, '..', 'public'), { maxage: 3600_000 })));
  const parse = bodyParser({ enableTypes: ['form', 'json'], formLimit: '16kb', jsonLimit: '64kb', encoding: 'utf-8' });
  koa.use(async (ctx, next) => (isOwn(ctx.path) ? parse(ctx, next) : next()));
  koa.use(parsedBodyGuard());
  koa.use(csrf({ exempt: (path) => !isOwn(path) || path.startsWith('/api/') || path.startsWith('/static/') || path.startsWith('/health') || path.startsWith('/certificates/'), secure }));

  const routers = [
    recoveryRouter({ interactions, tenants, limits, recovery: services.recovery }),
    interactionRouter({ interactions, flows: services.loginFlows, tenants, limits, otpTtlSeconds: config.otp.ttlSeconds, contexts: services.loginContexts, payloads }),
    healthRouter({ db, redis: redisHealth }),
    managementRouter({ accounts: accountService, tokens: services.clientCredentialsTokens, tenants, issuer: config.issuer, audit: services.audit, webhooks: services.webhooks }),
    activationRouter({ activation, accounts, tenants, limits, loginEvents, certificates: services.certificates, passwordMinLength: config.passwordMinLength, secure }),
  ];
  const providerSessions = services.providerSessions;
  // Before the account-area routers: an area session whose provider session ended is dropped.
  koa.use(dropEndedAreaSessions({ sessions: providerSessions, secure }));
  routers.push(accountAreaRouter({ config, tenants, accounts, loginEvents: events, sessions: providerSessions, certificates: services.certificates, secure }));
  routers.push(devicesRouter({ config, tenants, accounts, devices: services.devices, secure }));
  routers.push(loginMethodRouter({ config, tenants, accounts, methods: services.loginMethods, certificates: services.certificates, events: accountEvents, secure }));
  routers.push(passkeysRouter({ config, tenants, accounts, passkeys: services.accountPasskeys, secure }));
  routers.push(sessionsRouter({ config, tenants, accounts, sessions: services.accountSessions, secure }));
  routers.push(
    secretQuestionRouter({ config, tenants, accounts, secretQuestions: services.secretQuestions, cookieKeys: secrets.cookieKeys, secure }),
    historyRouter({ tenants, accounts, history: services.loginHistory, secure }),
  );
  routers.push(
    consoleRouter({ config, tenants, accounts, sessions: providerSessions, console: services.supportConsole, secure }),
    consoleActionsRouter({ config, tenants, accounts, sessions: providerSessions, accountService, audit: services.audit, secure }),
    consoleSupportDeskRouter({ tenants, accounts, sessions: providerSessions, audit: services.audit, webhooks: services.webhooks, secure }),
  );
  routers.push(certificateRouter({ certificates: services.certificates }));
  if (config.devMailbox) routers.push(devMailboxRouter({ repo: devMail }));
  if (config.demoSite) routers.push(demoRouter({ config, tenants }));
  koa.use(ownRoutes(routers));

  // On an http issuer the provider takes only GET at these two (acceptsHttpPost): say so, not "not found".
  if (!acceptsHttpPost(config.issuer))
    koa.use(async (ctx, next) => {
      if (ctx.method !== 'POST' || (ctx.path !== '/auth' && ctx.path !== '/session/end')) return next();
      ctx.set('Allow', 'GET');
      throw new MethodNotAllowedError('GET');
    });
  // oidc-provider's writes of a request go in one statement at its end (finishing an authorization
  // writes four rows); a token request reads its code (or refresh token), grant and session in one.
  // A token request's consume of its code goes with the tokens it issued: when another request used
  // the code first, nothing was stored and the answer is invalid_grant instead of the tokens.
  koa.use(async (ctx, next) => {
    if (ctx.method !== 'POST' || ctx.path !== '/token') return payloads.withDeferredWrites(next);
    try {
      await payloads.withDeferredWrites(() => payloads.withTokenPrefetch(next));
    } catch (e) {
      if (!(e instanceof SingleUseLost)) throw e;
      const { status, body } = invalidGrantResponse(e);
      ctx.status = status;
      ctx.body = body;
    }
  });
  koa.use(mount(provider));

  return {
    koa,
    provider,
    services,
    async close() {
      await services.webhookDelivery.close();
      await mail.close();
      await limits.close();
      await services.closeObservers();
    },
  };
}

/**
 * Our routers as one middleware that runs only for our own paths: oidc-provider's requests
 * (authorize, token, …) skip matching every router's routes. Every route must lie under
 * OWN_PREFIXES, which is checked here, so a route outside them fails start-up instead of going unserved.
 */
function ownRoutes(routers: Router[]): Koa.Middleware {
  for (const r of routers)
    for (const layer of r.stack)
      if (layer.methods.length && !isOwn(String(layer.path))) throw new Error(`route ${String(layer.path)} lies outside the own path prefixes (src/app.ts OWN_PREFIXES)`);
  const chain = routers.flatMap((r) => [r.routes(), r.allowedMethods()]) as Koa.Middleware[];
  return (ctx, next) => {
    if (!isOwn(ctx.path)) return next();
    const run = (i: number): Promise<void> => (i === chain.length ? next() : Promise.resolve(chain[i]!(ctx, () => run(i + 1))));
    return run(0);
  };
}
