import { TenantDirectory, type AppConfig } from './config/index.js';
import { resolveSecrets } from './config/secrets.js';
import { AccountEventService } from './account/account-event.service.js';
import { AccountLifecycleService } from './account/account-lifecycle.service.js';
import { AccountService } from './account/account.service.js';
import { ActivationService } from './activation/activation.service.js';
import { LoginEventService } from './history/login-event.service.js';
import { countingCodeMails, noMetrics, type Metrics } from './http/metrics.js';
import { LoginHandoff } from './login/login-handoff.js';
import { LockoutService } from './lockout/lockout.service.js';
import type { Logger } from './logger.js';
import { unavailableWhenQueueDown } from './mail/mail-queue.guard.js';
import { createMailQueue, type MailQueueOptions } from './mail/mail.queue.js';
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
import { SessionRepository } from './persistence/session.repository.js';

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
  metrics: Metrics;
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
  const lockout = new LockoutService(accounts, lifecycle, metrics);
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
  const accountEvents = new AccountEventService(new AccountEventRepository(prisma));
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
    lockout,
    events: accountEvents,
    mail,
    tenants,
    issuer: config.issuer,
    ttlSeconds: config.activationTtlSeconds,
    passwordMinLength: config.passwordMinLength,
    secretQuestions: config.secretQuestions,
  });
  const accountService = new AccountService({ accounts, loginEvents: events, events: accountEvents, activation, mail, tenants, lifecycle, certificates });
  return {
    metrics,
    loginHandoff,
    certificates,
    lifecycle,
    providerSessions,
    tenants,
    secrets,
    accounts,
    events,
    loginEvents: new LoginEventService(events, metrics),
    flows: new LoginFlowRepository(prisma, sql),
    payloads: new OidcPayloadRepository(prisma, sql),
    loginContexts: new LoginContextRepository(sql, Object.fromEntries(tenants.allClients().map(({ tenant, client }) => [client.client_id, tenant.id]))),
    devMail,
    otpRepo,
    otp,
    lockout,
    accountEvents,
    activation,
    accountService,
    mail,
  };
}
