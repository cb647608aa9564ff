// The production build as the Dockerfile makes it: `npm run build` into a project of its own, with
// production dependencies only, then `node dist/main.js` with NODE_ENV=production on a fresh
// PostgreSQL database, signing a user in with the mailed one-time password. Slow (a compile and an
// offline `npm ci`).
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as oidc from 'openid-client';
import { openDatabase, MEMORY_DATA_DIR } from '../../src/persistence/database.js';
import { AccountRepository } from '../../src/persistence/account.repository.js';
import { Agent, discover, followToCallback, startLogin, submit } from '../support/browser-less.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { freePort } from '../support/relying-party.js';
import { startSmtpServer } from '../support/smtp.js';
import { productionSecrets, startProviderProcess, type ProviderProcess } from './provider-process.js';

const run = promisify(execFile);
// The site of test/production/tenants.yaml.
const CLIENT_SECRET = 'prod-site-secret-0123456789abcdef';

let root: string;
let install: string;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'idp-prod-'));
  await run(process.execPath, ['scripts/build.mjs', '--out-dir', join(root, 'dist')], { maxBuffer: 16 << 20 });
  // What the runtime image holds besides dist/ (Dockerfile).
  for (const f of ['package.json', 'package-lock.json', 'views', 'public', 'config', 'prisma']) cpSync(f, join(root, f), { recursive: true });
  try {
    // From the npm cache: the lockfile's production packages, no scripts (the generated client is in dist/).
    await run('npm', ['ci', '--omit=dev', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: root, maxBuffer: 16 << 20 });
    install = 'npm ci --omit=dev --offline';
  } catch {
    // A cache without every package: this checkout's node_modules (hard links), pruned.
    await run('cp', ['-al', 'node_modules', join(root, 'node_modules')]);
    await run('npm', ['prune', '--omit=dev', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: root, maxBuffer: 16 << 20 });
    install = 'cp -al node_modules && npm prune --omit=dev';
  }
  // As the Dockerfile does: the optional peers npm added (the prisma CLI, typescript) go.
  await run(process.execPath, [join(process.cwd(), 'scripts/prune-production.mjs'), root]);
}, 600_000);

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

test('the build holds the compiled entry points and the files read beside the modules; no development package is installed', () => {
  for (const f of ['dist/main.js', 'dist/worker.js', 'dist/cli/admin.js', 'dist/persistence/generated/client.js', 'dist/i18n/locales/ja/common.json', 'dist/mail/templates/login-otp.ja.txt']) {
    expect(existsSync(join(root, f))).toBe(true);
  }
  expect(existsSync(join(root, 'dist/persistence/generated/client.ts'))).toBe(false);
  // Nor the optional peers npm installs with @prisma/client and i18next (scripts/prune-production.mjs).
  for (const dev of ['tsx', 'jest', '@swc/core', 'playwright-core', 'smtp-server', 'typescript', 'prisma', '@prisma/studio-core']) {
    expect([install, dev, existsSync(join(root, 'node_modules', dev))]).toEqual([install, dev, false]);
  }
  // Imported at run time by the demo site and the account area.
  expect(existsSync(join(root, 'node_modules/openid-client'))).toBe(true);
});

test('the admin CLI and the mail worker run from dist/ with production dependencies', async () => {
  const env = { PATH: process.env.PATH ?? '', NODE_ENV: 'development', LOG_LEVEL: 'silent', DATA_DIR: join(root, 'cli-data') };
  const { stdout } = await run(process.execPath, ['dist/cli/admin.js', 'tenants', '--json'], { cwd: root, env });
  expect((JSON.parse(stdout) as Array<{ id: string }>).map((t) => t.id)).toContain('demo');
  // Without REDIS_URL the worker explains itself and stops, after loading all of its modules.
  const worker = await run(process.execPath, ['dist/worker.js'], { cwd: root, env }).then(
    () => ({ code: 0, stderr: '' }),
    (e: { code: number; stderr: string }) => e,
  );
  expect(worker.code).toBe(1);
  expect(worker.stderr).toMatch(/The mail worker needs Redis/);
});

describe('npm run start:prod (node dist/main.js) in production', () => {
  let provider: ProviderProcess;
  let database: TestDatabase;
  let smtp: Awaited<ReturnType<typeof startSmtpServer>>;
  let issuer: string;

  beforeAll(async () => {
    database = await createTestDatabase('prod');
    smtp = await startSmtpServer();
    const port = await freePort();
    issuer = `http://127.0.0.1:${port}`;
    // Exactly what `npm run start:prod` runs: its variables, then node's arguments.
    const words = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> }).scripts['start:prod']!.split(/\s+/);
    const scriptEnv = Object.fromEntries(words.slice(0, words.indexOf('node')).map((w) => w.split('=') as [string, string]));
    const nodeArgs = words.slice(words.indexOf('node') + 1);
    expect(nodeArgs.at(-1)).toBe('dist/main.js');
    provider = startProviderProcess(nodeArgs, {
      ...scriptEnv,
      ...productionSecrets(),
      PORT: String(port),
      HOST: '127.0.0.1',
      ISSUER: issuer,
      DATABASE_URL: database.url,
      DATA_DIR: join(root, 'data'),
      SMTP_URL: smtp.url,
      TENANTS_FILE: join(process.cwd(), 'test/production/tenants.yaml'),
    }, root);
    await provider.waitForRecord((r) => r.msg === 'provider listening');
  }, 120_000);

  afterAll(async () => {
    await provider?.kill();
    await smtp?.close();
    await database?.drop();
  });

  test('serves discovery with its issuer, the login page, and a complete one-time-password login', async () => {
    const discovery = await fetch(`${issuer}/.well-known/openid-configuration`);
    expect(discovery.status).toBe(200);
    expect(((await discovery.json()) as { issuer: string }).issuer).toBe(issuer);

    const db = await openDatabase({ databaseUrl: database.url, dataDir: MEMORY_DATA_DIR });
    const user = { userId: 'prod-user', email: 'prod-user@example.com' };
    try {
      await new AccountRepository(db.prisma).create({ tenantId: 't1', userId: user.userId, devices: [{ email: user.email }] });
    } finally {
      await db.close();
    }

    const rp = await discover(issuer, 'prod-site', CLIENT_SECRET);
    const login = await startLogin(rp, issuer, {}, new Agent(issuer));
    const page = await login.agent.get(login.interactionPath);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('ユーザID');
    // Compiled views and static files are found from dist/ (paths resolve from the modules).
    const css = /href="(\/static\/[^"]+\.css)"/.exec(html)?.[1];
    expect(css).toBeDefined();
    expect((await fetch(`${issuer}${css}`)).status).toBe(200);

    const before = smtp.messages.length;
    expect((await submit(login, 'identify', { userId: user.userId })).status).toBe(303);
    const otp = await smtp.otpFor(user.email, before);
    const callback = await followToCallback(login.agent, await submit(login, 'otp', { otp }));
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    expect(tokens.claims()?.preferred_username).toBe(user.userId);
  });

  test('stops on SIGTERM', async () => {
    provider.child.kill('SIGTERM');
    expect(await provider.exited).toEqual({ code: 0, signal: null });
  });
});
