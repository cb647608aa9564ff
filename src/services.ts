import type { Context as KoaContext } from 'koa';
import { AccountSessionService } from './account/account-session.service.js';
import { DeviceService } from './account/device.service.js';
import { LoginMethodService } from './account/login-method.service.js';
import { SecretQuestionService } from './account/secret-question.service.js';
import { certificatesInUse } from './certificates/certificate-authority.js';
import { LoginHistoryService } from './history/login-history.service.js';
import { clientCertificateReader, type ClientCertificateReader } from './http/client-certificate.js';
import { redisProbe } from './http/health.router.js';
import { createRateLimits, type RateLimits } from './http/rate-limit.js';
import { requestIdOf } from './http/request-id.js';
import { mailOutboxFigures } from './persistence/health.js';
import { ClientCertificateFactor } from './login/factors/client-certificate.factor.js';
import { PasskeyFactor } from './login/factors/passkey.factor.js';
import { EmailOtpFactor } from './login/factors/email-otp.factor.js';
import { PasswordFactor } from './login/factors/password.factor.js';
import { LoginFlowService } from './login/login-flow.service.js';
import type { ClientCredentialsTokens } from './oidc/access-tokens.js';
import type { BackchannelLogout } from './oidc/backchannel.js';
import type { OidcInteractions } from './oidc/interactions.js';
import { loadSigningKeys } from './oidc/keys.js';
import type { Provider } from './oidc/provider.js';
import { DeviceRepository } from './persistence/device.repository.js';
import { RecoveryService } from './recovery/recovery.service.js';
import { TenantDirectory, type AppConfig } from './config/index.js';
import { resolveSecrets } from './config/secrets.js';
import { AccountEventService } from './account/account-event.service.js';
import { AccountLifecycleService } from './account/account-lifecycle.service.js';
import { AccountService } from './account/account.service.js';
import { ActivationService } from './activation/activation.service.js';
import { LoginEventService } from './history/login-event.service.js';
import { bullmqMailBacklog, countingCodeMails, createPrometheusMetrics, noMetrics, type Metrics, type ScrapedMetrics } from './http/metrics.js';
import { LoginHandoff } from './login/login-handoff.js';
import { LockoutService } from './lockout/lockout.service.js';
import type { Logger } from './logger.js';
import { unavailableWhenQueueDown } from './mail/mail-queue.guard.js';
import { createMailQueue, DEFAULT_QUEUE_NAME, type MailQueueOptions } from './mail/mail.queue.js';
import { createMailSender } from './mail/mail.sender.js';
import { createMailTransport } from './mail/mail.transport.js';
import type { MailQueue } from './mail/mail.types.js';
import { OtpService } from './otp/otp.service.js';
import { loadCertificateAuthority } from './certificates/certificate-authority.js';
import { CertificateService } from './certificates/certificate.service.js';
import { loadCertificateSecret } from './certificates/download-password.js';
import { CertificateRepository } from './persistence/certificate.repository.js';
import { AccountEventRepository } from './persistence/account-event.repository.js';
import { AccountRepository } from './persistence/account.repository.js';
import type { Database } from './persistence/database.js';
import { DevMailRepository } from './persistence/dev-mail.repository.js';
import { LoginEventRepository } from './persistence/login-event.repository.js';
import { LoginContextRepository } from './persistence/login-context.repository.js';
import { LoginFlowRepository } from './persistence/login-flow.repository.js';
import { MailOutboxRepository } from './persistence/mail-outbox.repository.js';
import { OidcPayloadRepository } from './persistence/oidc-payload.repository.js';
import { OneTimePasswordRepository } from './persistence/one-time-password.repository.js';
import { AccountPasskeyService } from './account/account-passkey.service.js';
import { PasskeyRepository } from './persistence/passkey.repository.js';
import { PasskeyService, relyingPartyOf } from './passkey/passkey.service.js';
import { SessionRepository } from './persistence/session.repository.js';
import { AuditRepository } from './persistence/audit.repository.js';
import { WebhookRepository } from './persistence/webhook.repository.js';
import { AuditService } from './audit/audit.service.js';
import { WebhookEvents } from './webhooks/webhook-events.js';
import { WebhookService } from './webhooks/webhook.service.js';
import { startWebhookDelivery, type WebhookDeliveryWorker } from './webhooks/webhook-delivery.js';
import type { TargetPolicy } from './webhooks/webhook-target.js';
import { SupportConsoleService } from './console/support-console.service.js';

/** The domain services and repositories, wired once; the HTTP app and the admin CLI share them. */
export interface DomainServices {
  tenants: TenantDirectory;
  secrets: ReturnType<typeof resolveSecrets>;
  accounts: AccountRepository;
  events: LoginEventRepository;
  loginEvents: LoginEventService;
  flows: LoginFlowRepository;
  payloads: OidcPayloadRepository;
  /** The interaction, flow, account and code of a login step, in one statement. */
  loginContexts: LoginContextRepository;
  devMail: DevMailRepository;
  otpRepo: OneTimePasswordRepository;
  otp: OtpService;
  /** Passkeys (WebAuthn credentials) and their ceremonies' challenges. */
  passkeys: PasskeyRepository;
  passkeyService: PasskeyService;
  lockout: LockoutService;
  accountEvents: AccountEventService;
  activation: ActivationService;
  accountService: AccountService;
  mail: MailQueue;
  certificates: CertificateService;
  /** Ends an account's sessions and tokens on a lock, re-activation, reset, method change or delete. */
  lifecycle: AccountLifecycleService;
  providerSessions: SessionRepository;
  /** Accounts of logins just completed here, for the same login's resume and code exchange. */
  loginHandoff: LoginHandoff;
  /** Background work that one instance at a time should do (housekeeping): see Database.tryExclusive. */
  exclusive: Pick<Database, 'tryExclusive'>;
  metrics: Metrics;
  /** The staff audit trail (management API, CLI). */
  audit: AuditService;
  /** Webhooks: registration (management API), events (one insert each) and their delivery queue. */
  webhooks: WebhookService;
  webhookEvents: WebhookEvents;
  webhookRepo: WebhookRepository;
  webhookTargets: TargetPolicy;
}

export function createDomainServices(opts: { config: AppConfig; db: Database; logger: Logger; mail?: MailQueue; mailQueue?: MailQueueOptions; metrics?: Metrics }): DomainServices {
  const { config, db, logger } = opts;
  const metrics = opts.metrics ?? noMetrics();
  const prisma = db.prisma;
  const sql = db.sql;
  const tenants = new TenantDirectory(config.tenants, config.issuer);
  const secrets = resolveSecrets(config);
  const accounts = new AccountRepository(prisma, sql);
  const events = new LoginEventRepository(prisma);
  const devMail = new DevMailRepository(prisma);
  const providerSessions = new SessionRepository(prisma);
  const loginHandoff = new LoginHandoff();
  const lifecycle = new AccountLifecycleService({ sessions: providerSessions, logger, onEnd: (id) => loginHandoff.forget(id) });
  const webhookRepo = new WebhookRepository(prisma, sql);
  const webhookEvents = new WebhookEvents(webhookRepo, logger);
  const webhookTargets: TargetPolicy = { production: config.env === 'production', allowPrivateTargets: config.webhooks.allowPrivateTargets };
  const audit = new AuditService(new AuditRepository(prisma));
  const lockout = new LockoutService(accounts, lifecycle, metrics, webhookEvents);
  const otpRepo = new OneTimePasswordRepository(prisma, sql);
  const mail = countingCodeMails(
    opts.mail ??
    unavailableWhenQueueDown(
      createMailQueue({
        config,
        logger,
        sender: createMailSender({ config, transport: createMailTransport(config), logger, devMail: config.devMailbox ? devMail : undefined }),
        store: { outbox: new MailOutboxRepository(prisma, sql), otps: otpRepo },
        sealKeys: secrets.cookieKeys,
        options: { ...opts.mailQueue, retry: { codeTtlMs: config.otp.ttlSeconds * 1000, ...opts.mailQueue?.retry } },
      }),
      logger,
    ),
    metrics,
  );
  const otp = new OtpService(otpRepo, secrets.otpHmacKey, config.otp);
  const passkeys = new PasskeyRepository(prisma, sql);
  const passkeyService = new PasskeyService({ passkeys, rp: relyingPartyOf(config.issuer, config.passkeyRpName), decoyKey: secrets.otpHmacKey });
  const accountEvents = new AccountEventService(new AccountEventRepository(prisma), webhookEvents);
  const certificates = new CertificateService({
    repo: new CertificateRepository(prisma),
    accounts,
    tenants,
    loadAuthority: () => loadCertificateAuthority(config),
    loadSecret: () => loadCertificateSecret(config),
    issuer: config.issuer,
  });
  const activation = new ActivationService({
    accounts,
    lifecycle,
    certificates,
    otpRepo,
    otp,
    passkeys: passkeyService,
    lockout,
    events: accountEvents,
    mail,
    tenants,
    issuer: config.issuer,
    ttlSeconds: config.activationTtlSeconds,
    passwordMinLength: config.passwordMinLength,
    secretQuestions: config.secretQuestions,
  });
  const accountService = new AccountService({ accounts, loginEvents: events, events: accountEvents, activation, mail, tenants, lifecycle, certificates, passkeys: passkeyService, audit, webhooks: webhookEvents });
  return {
    audit,
    webhookEvents,
    webhookRepo,
    webhookTargets,
    webhooks: new WebhookService({ repo: webhookRepo, cookieKeys: secrets.cookieKeys, target: webhookTargets, onQueued: () => webhookEvents.notifyQueued(), onChanged: () => webhookEvents.hooksChanged(), audit }),
    exclusive: { tryExclusive: db.tryExclusive.bind(db) },
    metrics,
    loginHandoff,
    certificates,
    lifecycle,
    providerSessions,
    tenants,
    secrets,
    accounts,
    events,
    loginEvents: new LoginEventService(events, metrics, webhookEvents),
    flows: new LoginFlowRepository(prisma, sql),
    payloads: new OidcPayloadRepository(prisma, sql),
    loginContexts: new LoginContextRepository(sql, Object.fromEntries(tenants.allClients().map(({ tenant, client }) => [client.client_id, tenant.id]))),
    devMail,
    otpRepo,
    otp,
    passkeys,
    passkeyService,
    lockout,
    accountEvents,
    activation,
    accountService,
    mail,
  };
}

/**
 * Everything the HTTP application uses, wired once: the domain services, the rate limits, the login
 * flow with its factors, the OIDC provider and the services bound to it, and the account area's and
 * recovery's services. src/app.ts builds only the HTTP pipeline and the routers from it.
 */
export interface AppServices extends DomainServices {
  limits: RateLimits;
  loginFlows: LoginFlowService;
  provider: Provider;
  interactions: OidcInteractions;
  backchannel: BackchannelLogout;
  clientCredentialsTokens: ClientCredentialsTokens;
  /** Reads the TLS client certificate of a request (mutual-TLS listener or trusted proxy header). */
  clientCertificate: ClientCertificateReader;
  recovery: RecoveryService;
  devices: DeviceService;
  loginMethods: LoginMethodService;
  accountSessions: AccountSessionService;
  secretQuestions: SecretQuestionService;
  /** パスキー in the account area (register, rename, delete, with notices). */
  accountPasskeys: AccountPasskeyService;
  loginHistory: LoginHistoryService;
  /** The support console's look-ups (search, account page), always within the staff member's tenant. */
  supportConsole: SupportConsoleService;
  /** The Prometheus registry behind /metrics; undefined without METRICS_TOKEN (nothing is counted then). */
  scrapedMetrics: ScrapedMetrics | undefined;
  /** Redis' PING for /health/ready, when Redis is configured. */
  redisHealth: ReturnType<typeof redisProbe> | undefined;
  /** Closes the connections the metrics and the readiness probe opened. */
  closeObservers(): Promise<void>;
  /** Sends the queued webhook deliveries (every HTTP process runs one). */
  webhookDelivery: WebhookDeliveryWorker;
}

export interface AppServicesOptions {
  config: AppConfig;
  db: Database;
  logger: Logger;
  /** Replaces the mail queue (benchmarks); tests use the real one with a real SMTP server. */
  mail?: MailQueue;
  /** Options of the mail queue created otherwise (e.g. a BullMQ key prefix). */
  mailQueue?: MailQueueOptions;
  rateLimitKeyPrefix?: string;
}

export async function createAppServices(opts: AppServicesOptions): Promise<AppServices> {
  const { config, db, logger } = opts;
  // oidc-provider loads here, not with the domain services: the admin CLI uses those without it.
  const [{ createProvider }, { OidcInteractions }, { BackchannelLogout }, { ClientCredentialsTokens }] = await Promise.all([
    import('./oidc/provider.js'),
    import('./oidc/interactions.js'),
    import('./oidc/backchannel.js'),
    import('./oidc/access-tokens.js'),
  ]);
  // prom-client is loaded only when /metrics is served.
  const scrapedMetrics = config.metricsToken ? await createPrometheusMetrics() : undefined;
  const metrics = scrapedMetrics ?? noMetrics();
  const domain = createDomainServices({ config, db, logger, mail: opts.mail, mailQueue: opts.mailQueue, metrics });
  const { tenants, secrets, accounts, events, flows, payloads, otp, lockout, accountEvents, activation, mail, loginEvents, certificates, lifecycle } = domain;
  const jwks = await loadSigningKeys(config);
  const limits = await createRateLimits({
    config,
    keyPrefix: opts.rateLimitKeyPrefix,
    onStoreError: (err, kind) => logger.warn({ err, kind }, 'rate-limit store error'),
    onRefused: (kind) => metrics.rateLimitRefused(kind),
  });
  // Mail and pool gauges are read at scrape time: waiting mail from BullMQ with Redis, else the outbox.
  const backlog =
    scrapedMetrics && config.redisUrl && !opts.mail
      ? bullmqMailBacklog({ redisUrl: config.redisUrl, queueName: opts.mailQueue?.queueName ?? DEFAULT_QUEUE_NAME, prefix: opts.mailQueue?.prefix })
      : undefined;
  metrics.readMailQueueFrom(async () => {
    const [outbox, bull] = await Promise.all([mailOutboxFigures(db), backlog?.read()]);
    return bull ? { ...outbox, ...bull } : outbox;
  });
  metrics.readWebhookQueueFrom(() => domain.webhookRepo.queueFigures());
  metrics.readPoolFrom(() => db.pool && { total: db.pool.totalCount, idle: db.pool.idleCount, waiting: db.pool.waitingCount });
  const redisHealth = config.redisUrl ? redisProbe(config.redisUrl) : undefined;
  const webhookDelivery = startWebhookDelivery({ repo: domain.webhookRepo, logger, cookieKeys: secrets.cookieKeys, target: domain.webhookTargets, options: config.webhooks });
  domain.webhookEvents.onQueued(() => webhookDelivery.kick());
  const loginFlows = new LoginFlowService({
    flows,
    accounts,
    events: loginEvents,
    lockout,
    limits,
    mail,
    tenants,
    factors: [
      new EmailOtpFactor({ otp, mail, otpLength: config.otp.length, otpTtlSeconds: config.otp.ttlSeconds, logger }),
      new PasswordFactor({ accounts, logger }),
      new ClientCertificateFactor({ certificates, mtlsUrl: config.certificates.mtls.url }),
      new PasskeyFactor({ passkeys: domain.passkeyService }),
    ],
    flowTtlSeconds: config.loginFlowTtlSeconds,
    revealUnknownUser: config.revealUnknownUser,
    decoyKey: secrets.otpHmacKey,
    handoff: domain.loginHandoff,
  });

  // Production fails at start, not at the first certificate login, when the CA is missing.
  if (config.env === 'production' && certificatesInUse(config)) await certificates.ready();
  const clientCertificate = clientCertificateReader({ header: config.certificates.clientCertHeader, trustedProxies: config.certificates.trustedProxies });
  const provider = createProvider({ config, tenants, accounts, payloads, loginHandoff: domain.loginHandoff, jwks, cookieKeys: secrets.cookieKeys, clientCertificate });
  const backchannel = new BackchannelLogout(provider);
  lifecycle.useNotifier(backchannel);
  // oidc-provider answers its own errors (our error handler never sees them): its server errors must
  // reach the log like ours.
  provider.on('server_error', (ctx: KoaContext, err: unknown) => logger.error({ err, path: ctx.path, method: ctx.method, requestId: requestIdOf(ctx) }, 'oidc-provider server error'));
  // So must its temporarily_unavailable answers (a database outage, src/oidc/adapter.ts), as ours are:
  // a 503, or an authorization error sent back to the site.
  const unavailable = (ctx: KoaContext) => {
    if (ctx.state.unavailableLogged) return;
    ctx.state.unavailableLogged = true;
    logger.error({ path: ctx.path, method: ctx.method, requestId: requestIdOf(ctx), oidcError: 'temporarily_unavailable' }, 'database unavailable');
  };
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.status === 503) unavailable(ctx);
  });
  provider.on('authorization.error', (ctx: KoaContext, err: { error?: string }) => {
    if (err?.error === 'temporarily_unavailable') unavailable(ctx);
  });
  provider.on('backchannel.error', (_ctx: unknown, err: unknown, client: { clientId?: string } | undefined) =>
    logger.warn({ err, clientId: client?.clientId }, 'back-channel logout failed'),
  );
  const accountSessions = new AccountSessionService({ sessions: domain.providerSessions, backchannel, events: accountEvents, tenants, logger, mail });

  return {
    ...domain,
    limits,
    loginFlows,
    provider,
    interactions: new OidcInteractions(provider),
    backchannel,
    clientCredentialsTokens: new ClientCredentialsTokens(provider),
    clientCertificate,
    recovery: new RecoveryService({ flows, accounts, loginEvents: events, accountEvents, lockout, lifecycle, limits, mail, otp, activation, tenants, config, logger, passkeys: domain.passkeyService }),
    devices: new DeviceService({
      devices: new DeviceRepository(db.prisma),
      otp,
      events: accountEvents,
      mail,
      limits,
      otpTtlSeconds: config.otp.ttlSeconds,
      resendCooldownSeconds: config.otp.resendCooldownSeconds,
      certificates,
    }),
    loginMethods: new LoginMethodService({ accounts, certificates, events: accountEvents, mail, lifecycle, passkeys: domain.passkeyService, passwordMinLength: config.passwordMinLength }),
    accountSessions,
    supportConsole: new SupportConsoleService({ accounts: domain.accountService, certificates, passkeys: domain.passkeys, loginEvents: events, sessions: accountSessions }),
    secretQuestions: new SecretQuestionService({ accounts, activation, events: accountEvents, mail }),
    accountPasskeys: new AccountPasskeyService({ passkeys: domain.passkeyService, events: accountEvents, mail }),
    loginHistory: new LoginHistoryService(events),
    scrapedMetrics,
    redisHealth,
    webhookDelivery,
    async closeObservers() {
      await backlog?.close();
      await redisHealth?.close();
    },
  };
}
