// Start-up and shutdown of the provider as operators run it (NODE_ENV=production, a child process):
// a missing or unsafe setting, or a database or Redis that cannot be reached, stops it with exit code 1
// and one line on stderr; SIGTERM lets requests in flight finish, refuses new connections and exits 0.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { freePort } from '../support/relying-party.js';
import { productionSecrets, startProviderProcess, type ProviderProcess } from './provider-process.js';

const TSX = ['--import', 'tsx', 'src/main.ts'];
const CLIENT_SECRET = 'prod-backoffice-secret-0123456789abcdef';

let dir: string;
let tenantsFile: string;
let certificateTenantsFile: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'idp-startup-'));
  tenantsFile = join(dir, 'tenants.yaml');
  writeFileSync(
    tenantsFile,
    `tenants:
  - id: t1
    name: テナント1
    contract: { login_methods: [otp] }
    clients:
      - { client_id: prod-backoffice, client_secret: ${CLIENT_SECRET}, name: 業務システム, redirect_uris: ['http://127.0.0.1/cb'], extra_grant_types: [client_credentials] }
`,
  );
  certificateTenantsFile = join(dir, 'tenants-certificates.yaml');
  writeFileSync(
    certificateTenantsFile,
    `tenants:
  - id: t-cert
    name: 証明書テナント
    contract: { login_methods: [password_certificate] }
    clients:
      - { client_id: cert-site, client_secret: cert-site-secret-0123456789abcdef, name: 利用サイト, redirect_uris: ['https://cert.example/cb'] }
`,
  );
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the provider until it exits (at most `timeoutMs`), with exactly the given environment. */
function runProvider(env: Record<string, string>, timeoutMs = 30_000): Promise<Outcome> {
  const base: Record<string, string> = {};
  for (const k of ['PATH', 'HOME', 'TMPDIR', 'LANG', 'TZ']) if (process.env[k]) base[k] = process.env[k]!;
  const started = Date.now();
  const child = spawn(process.execPath, TSX, { env: { ...base, HOST: '127.0.0.1', DATA_DIR: join(dir, 'data'), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** Exit code 1 and exactly one line on stderr, without stack frames; returns that line. */
function refusal(outcome: Outcome): string {
  expect({ code: outcome.code, stderr: outcome.stderr }).toEqual({ code: 1, stderr: expect.stringMatching(/^[^\n]+\n$/) });
  expect(outcome.stderr).not.toMatch(/^\s+at /m);
  return outcome.stderr.trim();
}

const withoutSecrets = { NODE_ENV: 'production', TENANTS_FILE: 'test/production/tenants.yaml' };

describe('production start-up refuses', () => {
  test('missing secrets, naming each', async () => {
    const line = refusal(await runProvider(withoutSecrets));
    expect(line).toMatch(/COOKIE_KEYS, OTP_HMAC_KEY, JWKS or JWKS_FILE: required in production/);
  });

  test('several problems at once, in one line', async () => {
    const line = refusal(await runProvider({ ...withoutSecrets, ISSUER: 'http://idp.example.com', TENANTS_FILE: 'config/tenants.yaml' }));
    expect(line).toMatch(/COOKIE_KEYS/);
    expect(line).toMatch(/ISSUER/);
    expect(line).toMatch(/change-me/);
  });

  test('an http issuer other than a loopback address', async () => {
    const line = refusal(await runProvider({ ...productionSecrets(), TENANTS_FILE: 'test/production/tenants.yaml', ISSUER: 'http://idp.example.com' }));
    expect(line).toMatch(/ISSUER: must be an https URL in production/);
  });

  test('the bundled example client secrets', async () => {
    const line = refusal(await runProvider({ ...productionSecrets(), TENANTS_FILE: 'config/tenants.yaml' }));
    expect(line).toMatch(/config\/tenants\.yaml: clients demo-site, demo-backoffice have an example client_secret \(containing "change-me"\)/);
    // The secrets themselves are not repeated.
    expect(line).not.toMatch(/demo-site-secret/);
  });

  test('a contract with client certificates but no CA or certificate secret', async () => {
    const line = refusal(await runProvider({ ...productionSecrets(), TENANTS_FILE: certificateTenantsFile }));
    expect(line).toMatch(/CA_CERT_FILE, CA_KEY_FILE, CERTIFICATE_SECRET: required in production when a contract allows password_certificate/);
    const half = refusal(await runProvider({ ...productionSecrets(), TENANTS_FILE: certificateTenantsFile, CA_CERT_FILE: join(dir, 'ca.pem'), CERTIFICATE_SECRET: 'x'.repeat(32) }));
    expect(half).toMatch(/CA_KEY_FILE: required in production when a contract allows password_certificate/);
  });

  test('an unreachable database after retrying for STARTUP_TIMEOUT_SECONDS, without the password', async () => {
    const outcome = await runProvider({
      ...productionSecrets(),
      TENANTS_FILE: 'test/production/tenants.yaml',
      DATABASE_URL: 'postgresql://postgres:s3cret-pw@127.0.0.1:1/x',
      STARTUP_TIMEOUT_SECONDS: '2',
    });
    const line = refusal(outcome);
    expect(line).toBe('cannot reach the database at 127.0.0.1:1 after 2 s: ECONNREFUSED');
    expect(outcome.stdout + outcome.stderr).not.toContain('s3cret-pw');
    expect(outcome.ms).toBeGreaterThanOrEqual(2_000);
  });

  describe('with a database', () => {
    let database: TestDatabase;
    beforeAll(async () => {
      database = await createTestDatabase('startup');
    });
    afterAll(async () => {
      await database?.drop();
    });

    test('an unreachable Redis after retrying, without the password', async () => {
      const outcome = await runProvider({
        ...productionSecrets(),
        TENANTS_FILE: 'test/production/tenants.yaml',
        DATABASE_URL: database.url,
        REDIS_URL: 'redis://:r3dis-pw@127.0.0.1:1/0',
        STARTUP_TIMEOUT_SECONDS: '2',
      });
      const line = refusal(outcome);
      expect(line).toBe('cannot reach Redis at 127.0.0.1:1 after 2 s: ECONNREFUSED');
      expect(outcome.stdout + outcome.stderr).not.toContain('r3dis-pw');
      expect(outcome.ms).toBeGreaterThanOrEqual(2_000);
    });
  });
});

/** Resolves with everything the socket received once `match` is in it. */
function receive(socket: Socket, match: RegExp, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => finish(new Error(`timed out waiting for ${match} in ${JSON.stringify(text)}`)), timeoutMs);
    const onData = (d: Buffer) => {
      text += d.toString();
      if (match.test(text)) finish();
    };
    const onEnd = () => finish(match.test(text) ? undefined : new Error(`connection ended without ${match}: ${JSON.stringify(text)}`));
    function finish(error?: Error) {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      if (error) reject(error);
      else resolve(text);
    }
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
  });
}

function connectTo(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('graceful shutdown', () => {
  let database: TestDatabase;
  let provider: ProviderProcess | undefined;
  let port: number;

  beforeAll(async () => {
    database = await createTestDatabase('shutdown');
  });

  afterEach(async () => {
    await provider?.kill();
  });

  afterAll(async () => {
    await database?.drop();
  });

  async function startProvider(env: Record<string, string> = {}): Promise<ProviderProcess> {
    port = await freePort();
    const p = startProviderProcess(
      TSX,
      { ...productionSecrets(), PORT: String(port), HOST: '127.0.0.1', ISSUER: `http://127.0.0.1:${port}`, DATABASE_URL: database.url, DATA_DIR: join(dir, 'shutdown-data'), TENANTS_FILE: tenantsFile, ...env },
      process.cwd(),
    );
    provider = p;
    await p.waitForRecord((r) => r.msg === 'provider listening');
    return p;
  }

  /** A token request whose headers the provider has read (its "100 Continue" says so) and whose body it awaits. */
  async function tokenRequestInFlight(): Promise<{ socket: Socket; body: string }> {
    const body = 'grant_type=client_credentials';
    const auth = Buffer.from(`prod-backoffice:${CLIENT_SECRET}`).toString('base64');
    const socket = await connectTo(port);
    socket.write(
      `POST /token HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Basic ${auth}\r\nContent-Type: application/x-www-form-urlencoded\r\n` +
        `Content-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
    );
    await receive(socket, /^HTTP\/1\.1 100 Continue\r\n\r\n/);
    return { socket, body };
  }

  test('SIGTERM lets a request in flight finish, refuses new connections and exits 0 within 10 s', async () => {
    const provider = await startProvider();
    const inFlight = await tokenRequestInFlight();
    // An idle keep-alive connection, which shutdown closes.
    const idle = await connectTo(port);
    idle.write(`GET /.well-known/openid-configuration HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    await receive(idle, /"issuer"/);
    const idleClosed = new Promise<void>((resolve) => idle.once('close', () => resolve()));

    const signalled = Date.now();
    provider.child.kill('SIGTERM');
    await provider.waitForRecord((r) => r.msg === 'shutting down', 5_000);
    await expect(connectTo(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await idleClosed;

    const response = receive(inFlight.socket, /\r\n\r\n\{[^}]*"access_token"[^}]*\}/);
    inFlight.socket.write(inFlight.body);
    expect(await response).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    inFlight.socket.destroy();

    const exit = await provider.exited;
    // Warnings and errors of the shutdown are part of the outcome (they say why it failed, if it did).
    const problems = provider.records().filter((r) => Number(r.level) >= 40).map((r) => `${String(r.msg)} ${JSON.stringify(r.err ?? '')}`);
    expect({ exit, problems }).toEqual({ exit: { code: 0, signal: null }, problems: [] });
    expect(Date.now() - signalled).toBeLessThan(10_000);
    expect(provider.records().some((r) => r.msg === 'stopped')).toBe(true);
  });

  test('a request still running at SHUTDOWN_TIMEOUT_SECONDS is cut, and the process still exits 0', async () => {
    const provider = await startProvider({ SHUTDOWN_TIMEOUT_SECONDS: '1' });
    const stuck = await tokenRequestInFlight();
    const cut = new Promise<void>((resolve) => stuck.socket.once('close', () => resolve()));
    const signalled = Date.now();
    provider.child.kill('SIGTERM');
    await cut;
    expect(Date.now() - signalled).toBeGreaterThanOrEqual(900);
    expect(await provider.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - signalled).toBeLessThan(5_000);
    expect(provider.records().find((r) => r.msg === 'requests still running at the shutdown timeout were cut')).toMatchObject({ connections: 1 });
  });
});
