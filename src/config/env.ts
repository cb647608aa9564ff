import { isIP } from 'node:net';
import { z } from 'zod';

/**
 * Every setting read from the environment, with its default and meaning. This is the only code that
 * reads process.env (docs/architecture.md). Durations are in seconds.
 */
const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'])
  .transform((v) => ['true', '1', 'yes', 'on'].includes(v));

export const envSchema = z.object({
  /** `development` enables the dev mailbox, the demo relying site and seeded demo data by default. */
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  /** HTTP port of the provider. */
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  /** Address the provider listens on. */
  HOST: z.string().default('0.0.0.0'),
  /** HTTP worker processes sharing PORT (node:cluster); above 1 needs DATABASE_URL. Each worker runs the whole application. */
  WEB_CONCURRENCY: z.coerce.number().int().min(1).max(256).default(1),
  /** Public issuer URL (what relying sites see); defaults to http://localhost:PORT. */
  ISSUER: z.url().optional(),
  /** PostgreSQL connection string. Unset: an embedded PGlite database under DATA_DIR. */
  DATABASE_URL: z.string().optional(),
  /**
   * PostgreSQL: seconds one statement, or the wait for a connection, may take before it fails, so a
   * database that stops answering (a network partition, a stalled server) turns into a 503 page
   * 「ただいまサービスを一時的にご利用いただけません」 instead of requests that hang. 0: no limit.
   * Migrations at start-up are not limited.
   */
  DATABASE_TIMEOUT_SECONDS: z.coerce.number().min(0).max(600).default(10),
  /** Folder for the embedded database and development keys. */
  DATA_DIR: z.string().default('.data'),
  /** Redis connection string. Set: BullMQ mail queue and shared rate-limit counters. */
  REDIS_URL: z.string().optional(),
  /** SMTP server for outgoing mail, e.g. smtp://user:pass@mail.example.com:587. Unset: mail only goes to the dev mailbox (or the log). */
  SMTP_URL: z.string().optional(),
  /** `inline`: this process also delivers queued mail; `external`: only `npm run worker` does (needs REDIS_URL). */
  MAIL_WORKER: z.enum(['inline', 'external']).default('inline'),
  /** Sender address of all mail. */
  MAIL_FROM: z.string().default('"Anshin Login" <no-reply@localhost>'),
  /**
   * The name an authenticator shows when a passkey is made for this provider (WebAuthn's RP name). The
   * RP ID is always the ISSUER's host name, so passkeys work only on that host (not on an IP address).
   */
  PASSKEY_RP_NAME: z.string().min(1).max(64).default('Anshin Login'),
  /** Tenants and clients file. */
  TENANTS_FILE: z.string().default('config/tenants.yaml'),
  /** Signing keys as a JWKS JSON string (private keys). Takes precedence over JWKS_FILE. */
  JWKS: z.string().optional(),
  /** Signing keys as a JWKS JSON file. Unset outside production: generated once under DATA_DIR. */
  JWKS_FILE: z.string().optional(),
  /** Comma-separated secrets that sign cookies (first one signs, all verify). Required in production. */
  COOKIE_KEYS: z.string().optional(),
  /** Secret for the HMAC under which one-time passwords are stored. Required in production. */
  OTP_HMAC_KEY: z.string().optional(),
  /** Trust X-Forwarded-* headers for the client IP and protocol (only behind a proxy you control). */
  TRUST_PROXY: bool.default(false),
  /**
   * Show the manual's explicit pages at the user-ID step: 「ワンタイムパスワードが送信できませんでした」 for
   * an unknown user ID, 「初回認証が済んでいません」 for one not yet activated. Off (default): unknown,
   * pending, locked and live IDs get the same answer there (an unknown ID a decoy method, stable per
   * ID), and a pending account is pointed to its activation only after submitting a code or password.
   */
  REVEAL_UNKNOWN_USER: bool.default(false),
  /** Development mailbox at /dev/mailbox listing sent messages; it stores them only when SMTP_URL is unset. Defaults to on in development. */
  DEV_MAILBOX: bool.optional(),
  /** Demo relying site at /demo/. Defaults to on in development. */
  DEMO_SITE: bool.optional(),
  /** Seed the demo account (demo tenant, user ID `demo-user`). Defaults to on in development. */
  SEED_DEMO: bool.optional(),
  /** Digits of a login one-time password (at least 6). */
  OTP_LENGTH: z.coerce.number().int().min(6).max(12).default(8),
  /** Lifetime of a login one-time password. */
  OTP_TTL: z.coerce.number().int().min(30).default(600),
  /** Minimum wait before another one-time password can be sent in the same login. */
  OTP_RESEND_COOLDOWN: z.coerce.number().int().min(0).default(60),
  /** Lifetime of a login flow (the interaction) in seconds. */
  LOGIN_FLOW_TTL: z.coerce.number().int().min(60).default(1800),
  /** Requests per minute per source IP on the user-ID, OTP and resend steps together. */
  RATE_LIMIT_IP_PER_MINUTE: z.coerce.number().int().min(1).default(60),
  /** OTP submissions per account per 15 minutes (wrong ones also count towards lockout). */
  RATE_LIMIT_ACCOUNT_OTP_PER_15MIN: z.coerce.number().int().min(1).default(30),
  /** One-time-password mails per account per hour, however often its ID is entered. */
  RATE_LIMIT_OTP_MAILS_PER_HOUR: z.coerce.number().int().min(1).default(5),
  /** Lifetime of an activation one-time password (first-time authentication), in seconds. Default 7 days. */
  ACTIVATION_TTL: z.coerce.number().int().min(300).default(7 * 24 * 3600),
  /** Secret questions offered at activation and in the account area (Japanese and English). */
  SECRET_QUESTIONS_FILE: z.string().default('config/secret-questions.yaml'),
  /** Shortest password accepted (NIST SP 800-63B: at least 8). */
  PASSWORD_MIN_LENGTH: z.coerce.number().int().min(8).max(64).default(8),
  /** Account area: a sign-in older than this (seconds) asks for the one-time password again before any change. */
  ACCOUNT_REAUTH_AGE: z.coerce.number().int().min(0).default(300),
  /** Account area: how long its own session lasts (seconds). */
  ACCOUNT_SESSION_TTL: z.coerce.number().int().min(60).default(3600),
  /** Support console (/console/): how long a staff session lasts (seconds); shorter than the account area's, as staff act on other people's accounts. */
  CONSOLE_SESSION_TTL: z.coerce.number().int().min(60).default(1800),
  /** Login events older than this many days are purged by the retention job. */
  LOGIN_EVENT_RETENTION_DAYS: z.coerce.number().int().min(1).default(90),
  /** Staff audit records (GET /api/v1/audit) older than this many days are purged by housekeeping (default 400: a year and a month, for a yearly review). */
  AUDIT_RETENTION_DAYS: z.coerce.number().int().min(1).default(400),
  /** Internal certificate authority's certificate (PEM) that issues the devices' client certificates. Unset outside production: generated once under DATA_DIR/ca. */
  CA_CERT_FILE: z.string().optional(),
  /** The CA's RSA private key (PEM, PKCS#8 or PKCS#1). Required in production with CA_CERT_FILE when a contract allows password_certificate. */
  CA_KEY_FILE: z.string().optional(),
  /** Secret under which the certificates' download passwords are stored encrypted (AES-256-GCM). Same rule as CA_KEY_FILE; generated under DATA_DIR elsewhere. */
  CERTIFICATE_SECRET: z.string().min(16).optional(),
  /** Port of the mutual-TLS listener (HTTPS, asks browsers for a client certificate) serving the same application. Unset: no such listener. */
  MTLS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  /** Server key (PEM) of the mutual-TLS listener. Unset outside production: a self-signed one is generated under DATA_DIR/mtls. */
  MTLS_KEY_FILE: z.string().optional(),
  /** Server certificate (PEM) of the mutual-TLS listener. */
  MTLS_CERT_FILE: z.string().optional(),
  /** Public URL of the mutual-TLS listener, as users reach it; defaults to https://<issuer host>:MTLS_PORT. */
  MTLS_URL: z.url().optional(),
  /** Header in which a TLS-terminating reverse proxy passes the client certificate (URL-encoded PEM, as nginx's $ssl_client_escaped_cert), e.g. x-client-cert. Unset: not read. */
  CLIENT_CERT_HEADER: z.string().regex(/^[A-Za-z0-9-]+$/).optional(),
  /** Comma-separated addresses or CIDR ranges of the proxies whose CLIENT_CERT_HEADER is believed (the TCP peer, never X-Forwarded-For). */
  TRUSTED_PROXIES: z
    .string()
    .default('')
    .refine((v) => v.split(',').map((p) => p.trim()).filter(Boolean).every((p) => /^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(p) && isIP(p.split('/')[0]!) !== 0), 'comma-separated IP addresses or CIDR ranges'),
  /** How long start-up keeps trying to reach PostgreSQL (DATABASE_URL) and Redis (REDIS_URL), with exponential backoff from 0.5 s, before it gives up. */
  STARTUP_TIMEOUT_SECONDS: z.coerce.number().int().min(0).max(600).default(30),
  /** On SIGTERM/SIGINT, how long requests in flight may take to finish before their connections are closed; the process then closes its queue and pools and exits. */
  SHUTDOWN_TIMEOUT_SECONDS: z.coerce.number().min(0).max(120).default(8),
  /** Bearer token that GET /metrics (Prometheus text format) requires, at least 16 characters. Unset: /metrics answers 404. */
  METRICS_TOKEN: z.string().min(16).optional(),
  /**
   * Webhooks (POST /api/v1/webhooks): allow receivers on loopback, private, link-local and other
   * special-use addresses (and any port). Off: such targets are refused at registration and before
   * every delivery. Receivers must be https in production, whatever this says.
   */
  WEBHOOK_ALLOW_PRIVATE_TARGETS: bool.default(false),
  /** Webhooks: seconds one delivery attempt may take (connect, send, response headers) before it counts as failed. */
  WEBHOOK_TIMEOUT: z.coerce.number().min(0.1).max(120).default(10),
  /**
   * Webhooks: seconds before the first retry of a failed delivery; each further retry waits twice as
   * long, up to WEBHOOK_RETRY_MAX. With the defaults (60 s, 6 h, 12 attempts) a delivery is given up
   * about 20.5 hours after its first attempt.
   */
  WEBHOOK_RETRY_BASE: z.coerce.number().min(0.01).default(60),
  /** Webhooks: the longest wait between two attempts, in seconds. */
  WEBHOOK_RETRY_MAX: z.coerce.number().min(0.01).default(6 * 3600),
  /** Webhooks: attempts (the first included) before a delivery is given up (status `failed`). */
  WEBHOOK_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(50).default(12),
  /**
   * Webhooks: deliveries given up in a row (each after WEBHOOK_MAX_ATTEMPTS attempts, about 20 hours of
   * failures with the defaults) after which the hook is turned off: no events are queued for it until
   * PATCH /api/v1/webhooks/{id} {"enabled": true}. A delivered event sets the count back to 0. 0: never.
   */
  WEBHOOK_DISABLE_AFTER_FAILURES: z.coerce.number().int().min(0).max(1000).default(5),
  /** Webhooks: seconds between looks at the queue for due retries and for events queued by other processes (the admin CLI, other instances). */
  WEBHOOK_POLL_INTERVAL: z.coerce.number().min(0.05).max(3600).default(5),
  /** Log level (pino). */
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Env = z.infer<typeof envSchema>;
