import { resolve } from 'node:path';
import { envSchema, type Env } from './env.js';
import { ConfigError, formatIssues, loadTenants, type ClientConfig, type Tenant } from './tenants.js';
import { loadSecretQuestions, type SecretQuestion } from './secret-questions.js';
import { productionProblems } from './production.js';

export { ConfigError, isResourceServer } from './tenants.js';
export type { ClientConfig, Contract, LoginMethod, Tenant } from './tenants.js';
export type { SecretQuestion } from './secret-questions.js';

/** The provider's whole configuration, resolved once at start and passed down (nothing else reads process.env). */
export interface AppConfig {
  env: Env['NODE_ENV'];
  port: number;
  host: string;
  webConcurrency: number;
  issuer: string;
  databaseUrl: string | undefined;
  /** DATABASE_TIMEOUT_SECONDS in milliseconds (0: no limit). */
  databaseTimeoutMs: number;
  dataDir: string;
  redisUrl: string | undefined;
  smtpUrl: string | undefined;
  mailFrom: string;
  passkeyRpName: string;
  mailWorker: 'inline' | 'external';
  jwks: string | undefined;
  jwksFile: string | undefined;
  cookieKeys: string[] | undefined;
  otpHmacKey: string | undefined;
  trustProxy: boolean;
  revealUnknownUser: boolean;
  devMailbox: boolean;
  demoSite: boolean;
  seedDemo: boolean;
  otp: { length: number; ttlSeconds: number; resendCooldownSeconds: number };
  loginFlowTtlSeconds: number;
  rateLimits: { ipPerMinute: number; accountOtpPer15Min: number; otpMailsPerHour: number };
  logLevel: Env['LOG_LEVEL'];
  metricsToken: string | undefined;
  tenants: Tenant[];
  activationTtlSeconds: number;
  passwordMinLength: number;
  secretQuestions: SecretQuestion[];
  accountArea: { reauthAgeSeconds: number; sessionTtlSeconds: number };
  /** The support console (/console/): its staff session's lifetime (CONSOLE_SESSION_TTL). */
  supportConsole: { sessionTtlSeconds: number };
  loginEventRetentionDays: number;
  /** AUDIT_RETENTION_DAYS. */
  auditRetentionDays: number;
  certificates: CertificateConfig;
  /** STARTUP_TIMEOUT_SECONDS and SHUTDOWN_TIMEOUT_SECONDS. */
  startupTimeoutSeconds: number;
  shutdownTimeoutSeconds: number;
  /** WEBHOOK_* (src/webhooks/): receivers allowed, timeout and retry schedule. Durations in ms. */
  webhooks: WebhookConfig;
}

export interface WebhookConfig {
  allowPrivateTargets: boolean;
  timeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  maxAttempts: number;
  pollMs: number;
  /** WEBHOOK_DISABLE_AFTER_FAILURES (0: never). */
  disableAfterFailures: number;
}

/** Client certificates: the internal CA, the mutual-TLS listener and a TLS-terminating proxy's header. */
export interface CertificateConfig {
  caCertFile: string | undefined;
  caKeyFile: string | undefined;
  secret: string | undefined;
  mtls: { port: number | undefined; keyFile: string | undefined; certFile: string | undefined; url: string | undefined };
  clientCertHeader: string | undefined;
  trustedProxies: string[];
}

export function loadConfig(source: Record<string, string | undefined> = process.env, overrides: Partial<AppConfig> = {}): AppConfig {
  // Empty strings count as unset, as in most twelve-factor tools.
  const cleaned = Object.fromEntries(Object.entries(source).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = envSchema.safeParse(cleaned);
  if (!parsed.success) throw new ConfigError(formatIssues('environment', parsed.error));
  const e = parsed.data;
  const issuer = (e.ISSUER ?? `http://localhost:${e.PORT}`).replace(/\/$/, '');
  const tenants = overrides.tenants ?? loadTenants(e.TENANTS_FILE);
  if (e.NODE_ENV === 'production') {
    // Every problem at once, so an operator fixes them in one round.
    const problems = productionProblems(e, issuer, tenants, overrides.tenants ? 'tenants' : e.TENANTS_FILE);
    if (problems.length) throw new ConfigError(`configuration is not fit for production:\n  ${problems.join('\n  ')}`);
  }
  const config: AppConfig = {
    env: e.NODE_ENV,
    port: e.PORT,
    host: e.HOST,
    webConcurrency: e.WEB_CONCURRENCY,
    issuer,
    databaseUrl: e.DATABASE_URL,
    databaseTimeoutMs: Math.round(e.DATABASE_TIMEOUT_SECONDS * 1000),
    dataDir: resolve(e.DATA_DIR),
    redisUrl: e.REDIS_URL,
    smtpUrl: e.SMTP_URL,
    mailFrom: e.MAIL_FROM,
    passkeyRpName: e.PASSKEY_RP_NAME,
    mailWorker: e.MAIL_WORKER,
    jwks: e.JWKS,
    jwksFile: e.JWKS_FILE,
    cookieKeys: e.COOKIE_KEYS?.split(',').map((k) => k.trim()).filter(Boolean),
    otpHmacKey: e.OTP_HMAC_KEY,
    trustProxy: e.TRUST_PROXY,
    revealUnknownUser: e.REVEAL_UNKNOWN_USER,
    devMailbox: e.DEV_MAILBOX ?? e.NODE_ENV === 'development',
    demoSite: e.DEMO_SITE ?? e.NODE_ENV === 'development',
    seedDemo: e.SEED_DEMO ?? e.NODE_ENV === 'development',
    otp: { length: e.OTP_LENGTH, ttlSeconds: e.OTP_TTL, resendCooldownSeconds: e.OTP_RESEND_COOLDOWN },
    loginFlowTtlSeconds: e.LOGIN_FLOW_TTL,
    rateLimits: {
      ipPerMinute: e.RATE_LIMIT_IP_PER_MINUTE,
      accountOtpPer15Min: e.RATE_LIMIT_ACCOUNT_OTP_PER_15MIN,
      otpMailsPerHour: e.RATE_LIMIT_OTP_MAILS_PER_HOUR,
    },
    logLevel: e.LOG_LEVEL,
    metricsToken: e.METRICS_TOKEN,
    tenants,
    activationTtlSeconds: e.ACTIVATION_TTL,
    passwordMinLength: e.PASSWORD_MIN_LENGTH,
    secretQuestions: overrides.secretQuestions ?? loadSecretQuestions(e.SECRET_QUESTIONS_FILE),
    accountArea: { reauthAgeSeconds: e.ACCOUNT_REAUTH_AGE, sessionTtlSeconds: e.ACCOUNT_SESSION_TTL },
    supportConsole: { sessionTtlSeconds: e.CONSOLE_SESSION_TTL },
    loginEventRetentionDays: e.LOGIN_EVENT_RETENTION_DAYS,
    auditRetentionDays: e.AUDIT_RETENTION_DAYS,
    certificates: {
      caCertFile: e.CA_CERT_FILE,
      caKeyFile: e.CA_KEY_FILE,
      secret: e.CERTIFICATE_SECRET,
      mtls: { port: e.MTLS_PORT, keyFile: e.MTLS_KEY_FILE, certFile: e.MTLS_CERT_FILE, url: mtlsUrl(e, issuer) },
      clientCertHeader: e.CLIENT_CERT_HEADER?.toLowerCase(),
      trustedProxies: e.TRUSTED_PROXIES.split(',').map((p) => p.trim()).filter(Boolean),
    },
    startupTimeoutSeconds: e.STARTUP_TIMEOUT_SECONDS,
    shutdownTimeoutSeconds: e.SHUTDOWN_TIMEOUT_SECONDS,
    webhooks: {
      allowPrivateTargets: e.WEBHOOK_ALLOW_PRIVATE_TARGETS,
      timeoutMs: Math.round(e.WEBHOOK_TIMEOUT * 1000),
      retryBaseMs: Math.round(e.WEBHOOK_RETRY_BASE * 1000),
      retryMaxMs: Math.round(e.WEBHOOK_RETRY_MAX * 1000),
      maxAttempts: e.WEBHOOK_MAX_ATTEMPTS,
      pollMs: Math.round(e.WEBHOOK_POLL_INTERVAL * 1000),
      disableAfterFailures: e.WEBHOOK_DISABLE_AFTER_FAILURES,
    },
  };
  return { ...config, ...overrides };
}

/** Public base URL of the mutual-TLS listener: MTLS_URL, or the issuer's host on MTLS_PORT. */
function mtlsUrl(e: Env, issuer: string): string | undefined {
  if (e.MTLS_URL) return e.MTLS_URL.replace(/\/$/, '');
  if (e.MTLS_PORT === undefined) return undefined;
  return `https://${new URL(issuer).hostname}:${e.MTLS_PORT}`;
}

/** client_id of the account area (the account console) of a tenant: a first-party public client of this provider. */
export const accountConsoleClientId = (tenantId: string) => `account-console-${tenantId}`;

/** client_id of the support console (/console/) of a tenant: a first-party public client its staff sign in through. */
export const supportConsoleClientId = (tenantId: string) => `support-console-${tenantId}`;

/**
 * Lookups over the configured tenants and clients. With an issuer, each tenant whose contract offers
 * the account area also gets its account console client (redirecting to /account/callback), and each
 * one offering the support console its support console client (redirecting to /console/callback).
 */
export class TenantDirectory {
  private readonly byClient = new Map<string, { tenant: Tenant; client: ClientConfig }>();
  private readonly byId = new Map<string, Tenant>();
  constructor(
    readonly tenants: Tenant[],
    issuer?: string,
  ) {
    for (const tenant of tenants) {
      this.byId.set(tenant.id, tenant);
      for (const client of tenant.clients) this.byClient.set(client.client_id, { tenant, client });
      if (issuer && tenant.contract.account_area) {
        const client: ClientConfig = {
          client_id: accountConsoleClientId(tenant.id),
          name: 'アカウント管理 / Account',
          first_party: true,
          token_endpoint_auth_method: 'client_secret_basic',
          redirect_uris: [`${issuer}/account/callback`],
          post_logout_redirect_uris: [`${issuer}/account/logged-out`],
          extra_grant_types: [],
          require_pkce: true, // our own client always sends it
        };
        this.byClient.set(client.client_id, { tenant, client });
      }
      if (issuer && tenant.contract.support_console) {
        const client: ClientConfig = {
          client_id: supportConsoleClientId(tenant.id),
          name: 'サポートコンソール / Support console',
          first_party: true,
          token_endpoint_auth_method: 'client_secret_basic',
          redirect_uris: [`${issuer}/console/callback`],
          post_logout_redirect_uris: [`${issuer}/console/logged-out`],
          extra_grant_types: [],
          require_pkce: true,
        };
        this.byClient.set(client.client_id, { tenant, client });
      }
    }
  }
  tenant(id: string): Tenant | undefined {
    return this.byId.get(id);
  }
  client(clientId: string): { tenant: Tenant; client: ClientConfig } | undefined {
    return this.byClient.get(clientId);
  }
  /** Every client, the account and support consoles included. */
  allClients(): Array<{ tenant: Tenant; client: ClientConfig }> {
    return [...this.byClient.values()];
  }
}
