import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp, type App } from '../../src/app.js';
import { generateSelfSignedServerCertificate } from '../../src/http/mtls-server.js';
import { loadConfig, type AppConfig, type Tenant } from '../../src/config/index.js';
import { parseTenants } from '../../src/config/tenants.js';
import { createLogger, type Logger } from '../../src/logger.js';
import type { MailQueueOptions } from '../../src/mail/mail.queue.js';
import type { MailQueue } from '../../src/mail/mail.types.js';
import { openDatabase, MEMORY_DATA_DIR, type Database } from '../../src/persistence/database.js';
import { createTestDatabase } from './database.js';
import { startSmtpServer } from './smtp.js';

export const REDIRECT_URI = 'http://127.0.0.1/cb';
export const POST_LOGOUT_URI = 'http://127.0.0.1/bye';

/** Two tenants: t1 with every kind of client, t2 with one, so cross-tenant rules can be tested. */
export const TEST_TENANTS_YAML = `
tenants:
  - id: t1
    name: テナント1
    contract: { login_methods: [otp], lockout_threshold: 5, device_add: true, device_change: true, device_delete: true }
    clients:
      - { client_id: rp-basic, client_secret: rp-basic-secret-0123456789, name: 利用サイトA, redirect_uris: ['${REDIRECT_URI}'], post_logout_redirect_uris: ['${POST_LOGOUT_URI}'] }
      - { client_id: rp-post, client_secret: rp-post-secret-0123456789, token_endpoint_auth_method: client_secret_post, name: 利用サイトB, redirect_uris: ['${REDIRECT_URI}'] }
      - { client_id: rp-public, name: 公開クライアント, redirect_uris: ['${REDIRECT_URI}'] }
      - { client_id: rp-third, client_secret: rp-third-secret-0123456789, name: 外部サイト, first_party: false, redirect_uris: ['${REDIRECT_URI}'] }
      - { client_id: backoffice-t1, client_secret: backoffice-t1-secret-0123456789, name: 管理システム1, redirect_uris: ['${REDIRECT_URI}'], extra_grant_types: [client_credentials] }
  - id: t2
    name: テナント2
    clients:
      - { client_id: rp-t2, client_secret: rp-t2-secret-01234567890, name: 別テナントのサイト, redirect_uris: ['${REDIRECT_URI}'] }
      - { client_id: backoffice-t2, client_secret: backoffice-t2-secret-0123456789, name: 管理システム2, redirect_uris: ['${REDIRECT_URI}'], extra_grant_types: [client_credentials] }
  - id: demo
    name: デモ
    clients:
      - { client_id: demo-site, client_secret: demo-site-secret-change-me, name: デモサイト, redirect_uris: ['http://127.0.0.1/demo/callback'], post_logout_redirect_uris: ['http://127.0.0.1/demo/'] }
`;

export interface TestServerOptions {
  /** `postgres` (default): a fresh database on the local server; `pglite`: in-memory embedded. */
  database?: 'postgres' | 'pglite';
  env?: Record<string, string>;
  tenants?: Tenant[];
  config?: Partial<AppConfig>;
  /** Replaces the mail queue (e.g. one that holds jobs until released); default: the real one. */
  mail?: MailQueue;
  /** Replaces the silent logger, for tests that look at what is logged. */
  logger?: Logger;
  /** An existing PostgreSQL database (kept at close): a second app on the same data, as after a restart. */
  databaseUrl?: string;
  /** An SMTP server to share between apps (kept at close). */
  smtp?: Awaited<ReturnType<typeof startSmtpServer>>;
  /** Mail queue options, e.g. a private BullMQ key prefix. */
  mailQueue?: MailQueueOptions;
  /** Serve over TLS (a self-signed certificate for 127.0.0.1): an https issuer. */
  tls?: boolean;
  /**
   * The issuer's host name (default 127.0.0.1; the server listens on 127.0.0.1 either way). Passkey
   * tests use `localhost`: WebAuthn refuses an IP address as relying-party ID.
   */
  issuerHost?: string;
}

export interface TestServer {
  issuer: string;
  app: App;
  db: Database;
  config: AppConfig;
  smtp: Awaited<ReturnType<typeof startSmtpServer>>;
  /** With `tls`: the server's self-signed certificate (PEM), for clients to trust. */
  tlsCertificate?: string;
  close(): Promise<void>;
}

/** Starts the real application on a free port, with a real database and a real SMTP server. */
export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const smtp = opts.smtp ?? (await startSmtpServer());
  const testDb = opts.database === 'pglite' || opts.databaseUrl ? undefined : await createTestDatabase('idp');
  const databaseUrl = opts.databaseUrl ?? testDb?.url;
  const dataDir = mkdtempSync(join(tmpdir(), 'idp-test-'));
  const tlsCredentials = opts.tls ? await generateSelfSignedServerCertificate('127.0.0.1') : undefined;
  const server: Server = tlsCredentials ? createHttpsServer(tlsCredentials) : createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const issuer = `${tlsCredentials ? 'https' : 'http'}://${opts.issuerHost ?? '127.0.0.1'}:${port}`;
  const config = loadConfig(
    {
      NODE_ENV: 'test',
      ISSUER: issuer,
      DATA_DIR: dataDir,
      SMTP_URL: smtp.url,
      DEV_MAILBOX: 'true',
      DEMO_SITE: 'true',
      RATE_LIMIT_IP_PER_MINUTE: '100000',
      RATE_LIMIT_ACCOUNT_OTP_PER_15MIN: '100000',
      RATE_LIMIT_OTP_MAILS_PER_HOUR: '1000',
      OTP_RESEND_COOLDOWN: '0',
      LOG_LEVEL: 'silent',
      ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
      ...opts.env,
    },
    { tenants: opts.tenants ?? parseTenants('test tenants', TEST_TENANTS_YAML), ...opts.config },
  );
  const logger = opts.logger ?? createLogger(config.logLevel);
  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.databaseUrl ? dataDir : MEMORY_DATA_DIR, statementTimeoutMs: config.databaseTimeoutMs });
  const app = await createApp({ config, db, logger, rateLimitKeyPrefix: `t${randomBytes(4).toString('hex')}`, mail: opts.mail, mailQueue: opts.mailQueue });
  server.on('request', app.koa.callback());
  return {
    issuer,
    app,
    db,
    config,
    smtp,
    tlsCertificate: tlsCredentials?.cert,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await app.close();
      await db.close();
      if (!opts.smtp) await smtp.close();
      await testDb?.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

let seq = 0;
/** A unique user ID and e-mail address for one test. */
export function uniqueUser(prefix = 'usr') {
  seq += 1;
  const id = `p-${prefix}-${process.pid}-${seq}-${randomBytes(2).toString('hex')}`;
  return { userId: id, email: `${id}@example.test` };
}
