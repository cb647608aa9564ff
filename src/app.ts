import { bodyParser } from '@koa/bodyparser';
import Koa from 'koa';
import helmet from 'koa-helmet';
import mount from 'koa-mount';
import serve from 'koa-static';
import views from 'koa-views';
import { join } from 'node:path';
import type { AppConfig } from './config/index.js';
import { createDomainServices, type DomainServices } from './services.js';
import { csrf } from './http/csrf.js';
import { errorHandler } from './http/error-handler.js';
import { MethodNotAllowedError } from './http/errors.js';
import { inputGuard, parsedBodyGuard } from './http/input-guard.js';
import { locale } from './http/locale.js';
import { VIEWS_DIR } from './http/pages.js';
import { createRateLimits, type RateLimits } from './http/rate-limit.js';
import { interactionRouter } from './interaction/interaction.router.js';
import { EmailOtpFactor } from './login/factors/email-otp.factor.js';
import { PasswordFactor } from './login/factors/password.factor.js';
import { ClientCertificateFactor } from './login/factors/client-certificate.factor.js';
import { certificateRouter } from './certificates/certificate.router.js';
import { certificatesInUse } from './certificates/certificate-authority.js';
import { clientCertificateReader } from './http/client-certificate.js';
import { LoginFlowService } from './login/login-flow.service.js';
import type { Logger } from './logger.js';
import { devMailboxRouter } from './mail/dev-mailbox.router.js';
import type { MailQueueOptions } from './mail/mail.queue.js';
import type { MailQueue } from './mail/mail.types.js';
import { OidcInteractions } from './oidc/interactions.js';
import { loadSigningKeys } from './oidc/keys.js';
import { acceptsHttpPost, createProvider, type Provider } from './oidc/provider.js';
import type { Database } from './persistence/database.js';
import { demoRouter } from './demo/demo.router.js';
import { activationRouter } from './activation/activation.router.js';
import { healthRouter, redisProbe } from './http/health.router.js';
import { bullmqMailBacklog, createPrometheusMetrics, metricsEndpoint, noMetrics } from './http/metrics.js';
import { requestContext, requestIdOf } from './http/request-id.js';
import { mailOutboxFigures } from './persistence/health.js';
import { DEFAULT_QUEUE_NAME } from './mail/mail.queue.js';
import { accountAreaRouter } from './account/area/account-area.router.js';
import { devicesRouter } from './account/area/devices.router.js';
import { DeviceService } from './account/device.service.js';
import { DeviceRepository } from './persistence/device.repository.js';
import { dropEndedAreaSessions } from './account/area/area-session.js';
import { sessionsRouter } from './account/area/sessions.router.js';
import { loginMethodRouter } from './account/area/login-method.router.js';
import { LoginMethodService } from './account/login-method.service.js';
import { AccountSessionService } from './account/account-session.service.js';
import { BackchannelLogout } from './oidc/backchannel.js';
import { secretQuestionRouter } from './account/area/secret-question.router.js';
import { historyRouter } from './account/area/history.router.js';
import { SecretQuestionService } from './account/secret-question.service.js';
import { LoginHistoryService } from './history/login-history.service.js';
import { recoveryRouter } from './recovery/recovery.router.js';
import { RecoveryService } from './recovery/recovery.service.js';
import { managementRouter } from './admin/management.router.js';
import { renderProblem } from './admin/problem.js';
import { ClientCredentialsTokens } from './oidc/access-tokens.js';

/** Path prefixes served by our own routers; everything else belongs to oidc-provider. */
const OWN_PREFIXES = ['/interaction', '/demo', '/dev', '/static', '/account', '/activation', '/recovery', '/api', '/health', '/certificates'];
const isOwn = (path: string) => OWN_PREFIXES.some((p) => path === p || path.startsWith(`${p}/`));

export interface AppServices extends DomainServices {
  limits: RateLimits;
}

export interface App {
  koa: Koa;
  provider: Provider;
  services: AppServices;
  /** Stops background work (mail queue, rate-limit store). The database is the caller's. */
  close(): Promise<void>;
}

export interface CreateAppOptions {
  config: AppConfig;
  db: Database;
  logger: Logger;
  /** Replaces the mail queue (benchmarks); tests use the real one with a real SMTP server. */
  mail?: MailQueue;
  /** Options of the mail queue created otherwise (e.g. a BullMQ key prefix). */
  mailQueue?: MailQueueOptions;
  rateLimitKeyPrefix?: string;
}

/** Builds the whole HTTP application: OIDC endpoints, login screens, demo site and dev tools. */
export async function createApp(opts: CreateAppOptions): Promise<App> {
  const { config, db, logger } = opts;
  // prom-client is loaded only when /metrics is served.
  const scraped = config.metricsToken ? await createPrometheusMetrics() : undefined;
  const metrics = scraped ?? noMetrics();
  const domain = createDomainServices({ config, db, logger, mail: opts.mail, mailQueue: opts.mailQueue, metrics });
  const { tenants, secrets, accounts, events, flows: flowRepo, payloads, devMail, otp, lockout, accountEvents, activation, accountService, mail, loginEvents } = domain;
  const jwks = await loadSigningKeys(config);
  const limits = await createRateLimits({
    config,
    keyPrefix: opts.rateLimitKeyPrefix,
    onStoreError: (err, kind) => logger.warn({ err, kind }, 'rate-limit store error'),
    onRefused: (kind) => metrics.rateLimitRefused(kind),
  });
  // Mail and pool gauges are read at scrape time: waiting mail from BullMQ with Redis, else the outbox.
  const backlog = scraped && config.redisUrl && !opts.mail ? bullmqMailBacklog({ redisUrl: config.redisUrl, queueName: opts.mailQueue?.queueName ?? DEFAULT_QUEUE_NAME, prefix: opts.mailQueue?.prefix }) : undefined;
  metrics.readMailQueueFrom(async () => {
    const [outbox, bull] = await Promise.all([mailOutboxFigures(db), backlog?.read()]);
    return bull ? { ...outbox, ...bull } : outbox;
  });
  metrics.readPoolFrom(() => db.pool && { total: db.pool.totalCount, idle: db.pool.idleCount, waiting: db.pool.waitingCount });
  const redisHealth = config.redisUrl ? redisProbe(config.redisUrl) : undefined;
  const emailOtp = new EmailOtpFactor({ otp, mail, otpLength: config.otp.length, otpTtlSeconds: config.otp.ttlSeconds, logger });
  const loginFlows = new LoginFlowService({
    flows: flowRepo,
    accounts,
    events: loginEvents,
    lockout,
    limits,
    mail,
    tenants,
    factors: [emailOtp, new PasswordFactor({ accounts, logger }), new ClientCertificateFactor({ certificates: domain.certificates, mtlsUrl: config.certificates.mtls.url })],
    flowTtlSeconds: config.loginFlowTtlSeconds,
    revealUnknownUser: config.revealUnknownUser,
    decoyKey: secrets.otpHmacKey,
    handoff: domain.loginHandoff,
  });

  // Production fails at start, not at the first certificate login, when the CA is missing.
  if (config.env === 'production' && certificatesInUse(config)) await domain.certificates.ready();
  const clientCertificate = clientCertificateReader({ header: config.certificates.clientCertHeader, trustedProxies: config.certificates.trustedProxies });
  const provider = createProvider({ config, tenants, accounts, payloads, loginHandoff: domain.loginHandoff, jwks, cookieKeys: secrets.cookieKeys, clientCertificate });
  const interactions = new OidcInteractions(provider);
  const backchannel = new BackchannelLogout(provider);
  domain.lifecycle.useNotifier(backchannel);
  // oidc-provider answers its own errors (our error handler never sees them): its server errors must
  // reach the log like ours.
  provider.on('server_error', (ctx: Koa.Context, err: unknown) => logger.error({ err, path: ctx.path, method: ctx.method, requestId: requestIdOf(ctx) }, 'oidc-provider server error'));
  provider.on('backchannel.error', (_ctx: unknown, err: unknown, client: { clientId?: string } | undefined) =>
    logger.warn({ err, clientId: client?.clientId }, 'back-channel logout failed'),
  );

  const koa = new Koa();
  koa.keys = secrets.cookieKeys; // must equal the provider's cookie keys (DESIGN.md)
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
    helmet({
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
  koa.use(metricsEndpoint({ metrics: scraped, token: config.metricsToken }));
  // PostgreSQL refuses a NUL byte: such input is the client's mistake (400), never a query error.
  koa.use(inputGuard({ isProviderPath: (path) => !isOwn(path) }));
  koa.use(mount('/static', serve(join(VIEWS_DIR, '..', 'public'), { maxage: 3600_000 })));
  const parse = bodyParser({ enableTypes: ['form', 'json'], formLimit: '16kb', jsonLimit: '64kb', encoding: 'utf-8' });
  koa.use(async (ctx, next) => (isOwn(ctx.path) ? parse(ctx, next) : next()));
  koa.use(parsedBodyGuard());
  koa.use(csrf({ exempt: (path) => !isOwn(path) || path.startsWith('/api/') || path.startsWith('/static/') || path.startsWith('/health') || path.startsWith('/certificates/'), secure }));

  const routers = [
    recoveryRouter({ interactions, tenants, limits, recovery: new RecoveryService({ flows: flowRepo, accounts, loginEvents, accountEvents, lockout, lifecycle: domain.lifecycle, limits, mail, otp, activation, tenants, config, logger }) }),
    interactionRouter({ interactions, flows: loginFlows, tenants, limits, otpTtlSeconds: config.otp.ttlSeconds, contexts: domain.loginContexts, payloads }),
    healthRouter({ db, redis: redisHealth }),
    managementRouter({ accounts: accountService, tokens: new ClientCredentialsTokens(provider), tenants, issuer: config.issuer }),
    activationRouter({ activation, accounts, tenants, limits, loginEvents, certificates: domain.certificates, passwordMinLength: config.passwordMinLength, secure }),
  ];
  const providerSessions = domain.providerSessions;
  // Before the account-area routers: an area session whose provider session ended is dropped.
  koa.use(dropEndedAreaSessions({ sessions: providerSessions, secure }));
  routers.push(accountAreaRouter({ config, tenants, accounts, loginEvents: events, sessions: providerSessions, certificates: domain.certificates, secure }));
  routers.push(
    devicesRouter({
      config,
      tenants,
      accounts,
      devices: new DeviceService({
        devices: new DeviceRepository(db.prisma),
        otp,
        events: accountEvents,
        mail,
        limits,
        otpTtlSeconds: config.otp.ttlSeconds,
        resendCooldownSeconds: config.otp.resendCooldownSeconds,
        certificates: domain.certificates,
      }),
      secure,
    }),
  );
  routers.push(
    loginMethodRouter({
      config,
      tenants,
      accounts,
      methods: new LoginMethodService({ accounts, certificates: domain.certificates, events: accountEvents, mail, lifecycle: domain.lifecycle, passwordMinLength: config.passwordMinLength }),
      certificates: domain.certificates,
      events: accountEvents,
      secure,
    }),
  );
  routers.push(
    sessionsRouter({
      config,
      tenants,
      accounts,
      sessions: new AccountSessionService({ sessions: providerSessions, backchannel, events: accountEvents, tenants, logger, mail }),
      secure,
    }),
  );
  routers.push(
    secretQuestionRouter({ config, tenants, accounts, secretQuestions: new SecretQuestionService({ accounts, activation, events: accountEvents, mail }), cookieKeys: secrets.cookieKeys, secure }),
    historyRouter({ tenants, accounts, history: new LoginHistoryService(events), secure }),
  );
  routers.push(certificateRouter({ certificates: domain.certificates }));
  if (config.devMailbox) routers.push(devMailboxRouter({ repo: devMail }));
  if (config.demoSite) routers.push(demoRouter({ config, tenants }));
  for (const r of routers) koa.use(r.routes()).use(r.allowedMethods());

  // On an http issuer the provider takes only GET at these two (acceptsHttpPost): say so, not "not found".
  if (!acceptsHttpPost(config.issuer))
    koa.use(async (ctx, next) => {
      if (ctx.method !== 'POST' || (ctx.path !== '/auth' && ctx.path !== '/session/end')) return next();
      ctx.set('Allow', 'GET');
      throw new MethodNotAllowedError('GET');
    });
  koa.use(mount(provider));

  return {
    koa,
    provider,
    services: { ...domain, limits },
    async close() {
      await mail.close();
      await limits.close();
      await backlog?.close();
      await redisHealth?.close();
    },
  };
}
