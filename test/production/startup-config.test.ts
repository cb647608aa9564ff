// The rules behind production start-up, without a process: what loadConfig refuses in production, and
// how start-up waits for a service (backoff, the one-line failure, a database that comes up late).
import { createServer, connect, type Server, type Socket } from 'node:net';
import { ConfigError, loadConfig } from '../../src/config/index.js';
import { parseTenants } from '../../src/config/tenants.js';
import { openDatabase, MEMORY_DATA_DIR } from '../../src/persistence/database.js';
import { describeUrl, StartupError, waitUntilReachable } from '../../src/startup-checks.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { freePort } from '../support/relying-party.js';

const tenants = (secret: string, methods = 'otp') =>
  parseTenants('f', `tenants:\n  - id: a\n    name: a\n    contract: { login_methods: [${methods}] }\n    clients: [{ client_id: c, client_secret: ${secret}, name: c, redirect_uris: ['https://a.example/cb'] }]\n`);
const secrets = { NODE_ENV: 'production', JWKS: '{"keys":[]}', COOKIE_KEYS: 'k'.repeat(32), OTP_HMAC_KEY: 'h'.repeat(32) };
const ok = tenants('a-random-secret-0123456789');

function problemsOf(env: Record<string, string>, t = ok): string[] {
  try {
    loadConfig(env, { tenants: t });
    return [];
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return e.message.split('\n').slice(1).map((l) => l.trim());
  }
}

describe('production configuration', () => {
  test('an http issuer is refused unless its host is a loopback address', () => {
    for (const issuer of ['http://127.0.0.1:3000', 'http://localhost:3000', 'http://[::1]:8080', 'https://idp.example.com', 'https://10.0.0.1'])
      expect([issuer, problemsOf({ ...secrets, ISSUER: issuer })]).toEqual([issuer, []]);
    // Unset, the issuer is http://localhost:PORT.
    expect(problemsOf(secrets)).toEqual([]);
    for (const issuer of ['http://idp.example.com', 'http://10.0.0.1:3000', 'http://127.0.0.1.example.com'])
      expect([issuer, problemsOf({ ...secrets, ISSUER: issuer })]).toEqual([issuer, [expect.stringMatching(/^ISSUER: must be an https URL in production/)]]);
  });

  test('an example client secret is refused in production only, whatever its case', () => {
    expect(problemsOf(secrets, tenants('my-own-secret-CHANGE-ME-please'))).toEqual(['tenants: client c has an example client_secret (containing "change-me"); give each a random secret of its own']);
    expect(() => loadConfig({ NODE_ENV: 'test' }, { tenants: tenants('demo-site-secret-change-me') })).not.toThrow();
  });

  test('client certificates need the CA and CERTIFICATE_SECRET; MTLS_PORT needs its key and certificate', () => {
    const certs = tenants('a-random-secret-0123456789', 'password_certificate');
    expect(problemsOf(secrets, certs)).toEqual(['CA_CERT_FILE, CA_KEY_FILE, CERTIFICATE_SECRET: required in production when a contract allows password_certificate (tenant a)']);
    // (Any readable files: their contents are checked where they are loaded.)
    expect(problemsOf({ ...secrets, CA_CERT_FILE: 'package.json', CA_KEY_FILE: 'package.json', CERTIFICATE_SECRET: 's'.repeat(32) }, certs)).toEqual([]);
    expect(problemsOf({ ...secrets, MTLS_PORT: '8443', MTLS_CERT_FILE: 'package.json' })).toEqual(['MTLS_KEY_FILE: required in production when MTLS_PORT is set']);
  });

  test('a key or certificate file that cannot be read', () => {
    expect(problemsOf({ ...secrets, JWKS: '', JWKS_FILE: '/nonexistent/jwks.json', CA_KEY_FILE: '/nonexistent/ca.key' })).toEqual([
      'JWKS_FILE: cannot read /nonexistent/jwks.json (ENOENT)',
      'CA_KEY_FILE: cannot read /nonexistent/ca.key (ENOENT)',
    ]);
  });

  test('every problem is listed at once', () => {
    expect(problemsOf({ NODE_ENV: 'production', ISSUER: 'http://idp.example.com' }, tenants('x-change-me-0123456789', 'password_certificate'))).toEqual([
      'COOKIE_KEYS, OTP_HMAC_KEY, JWKS or JWKS_FILE: required in production',
      expect.stringMatching(/^ISSUER:/),
      expect.stringMatching(/^tenants: client c has an example client_secret/),
      expect.stringMatching(/^CA_CERT_FILE, CA_KEY_FILE, CERTIFICATE_SECRET:/),
    ]);
  });

  test('start-up and shutdown timeouts', () => {
    expect(loadConfig({ NODE_ENV: 'test' }, { tenants: ok })).toMatchObject({ startupTimeoutSeconds: 30, shutdownTimeoutSeconds: 8 });
    expect(loadConfig({ NODE_ENV: 'test', STARTUP_TIMEOUT_SECONDS: '0', SHUTDOWN_TIMEOUT_SECONDS: '2.5' }, { tenants: ok })).toMatchObject({ startupTimeoutSeconds: 0, shutdownTimeoutSeconds: 2.5 });
  });
});

describe('waiting for a service', () => {
  const refused = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });

  test('retries a refused connection with doubling delays until it succeeds', async () => {
    const delays: number[] = [];
    let attempts = 0;
    const value = await waitUntilReachable({ what: 'X', where: 'h:1', timeoutMs: 10_000, onRetry: (_r, ms) => delays.push(ms) }, async () => {
      if (++attempts < 3) throw refused();
      return 'up';
    });
    expect(value).toBe('up');
    expect(delays).toEqual([500, 1000]);
  });

  test('gives up after the timeout with one line; fails at once on an error that waiting cannot cure', async () => {
    const started = Date.now();
    await expect(waitUntilReachable({ what: 'the database', where: 'h:1', timeoutMs: 1_000 }, async () => Promise.reject(refused()))).rejects.toThrow(
      new StartupError('cannot reach the database at h:1 after 1 s: ECONNREFUSED'),
    );
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    let attempts = 0;
    const auth = Object.assign(new Error('password authentication failed for user "u"'), { code: '28P01' });
    await expect(
      waitUntilReachable({ what: 'the database', where: 'h:1', timeoutMs: 10_000 }, async () => {
        attempts++;
        throw auth;
      }),
    ).rejects.toThrow(new StartupError('cannot connect to the database at h:1: password authentication failed for user "u" (28P01)'));
    expect(attempts).toBe(1);
  });

  test('URLs are described by host and port only', () => {
    expect(describeUrl('postgresql://user:pw@db.internal:6432/idp', 5432)).toBe('db.internal:6432');
    expect(describeUrl('postgresql://user:pw@db.internal/idp', 5432)).toBe('db.internal:5432');
    expect(describeUrl('redis://:pw@cache', 6379)).toBe('cache:6379');
    expect(describeUrl('postgresql://user@localhost:5432/idp?host=%2Fvar%2Frun%2Fpostgresql', 5432)).toBe('/var/run/postgresql:5432');
  });

  describe('a database that comes up after the provider', () => {
    let database: TestDatabase;
    let proxy: Server | undefined;
    const sockets = new Set<Socket>();
    beforeAll(async () => {
      database = await createTestDatabase('late');
    });
    afterAll(async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()));
      await database?.drop();
    });

    test('is waited for, then opened', async () => {
      const target = new URL(database.url);
      const port = await freePort();
      const late = new URL(database.url);
      late.hostname = '127.0.0.1';
      late.port = String(port);
      // The "database" starts listening once the first attempt has been refused.
      const startProxy = () => {
        proxy ??= createServer((inbound) => {
          const outbound = connect(Number(target.port || 5432), target.hostname);
          for (const s of [inbound, outbound]) {
            sockets.add(s);
            s.on('error', () => {});
          }
          inbound.pipe(outbound).pipe(inbound);
        }).listen(port, '127.0.0.1');
      };
      const retries: Array<Record<string, unknown>> = [];
      const db = await openDatabase({
        databaseUrl: late.href,
        dataDir: MEMORY_DATA_DIR,
        connectTimeoutMs: 10_000,
        logger: {
          info(o: object, msg?: string) {
            if (msg !== 'database not reachable yet') return;
            retries.push(o as Record<string, unknown>);
            startProxy();
          },
        },
      });
      try {
        expect(await db.sql.query<{ one: number }>('SELECT 1 AS one')).toEqual([{ one: 1 }]);
      } finally {
        await db.close();
      }
      expect(retries[0]).toEqual({ database: `127.0.0.1:${port}`, reason: 'ECONNREFUSED', retryInMs: 500 });
    });
  });
});
