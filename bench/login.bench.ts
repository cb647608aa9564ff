// Login throughput and latency of the provider, run as its own process on PostgreSQL, against a bare
// oidc-provider (in-memory, minimal interaction of the same shape) as the baseline.
// `npm run bench -- --logins 500 --concurrency 20`; see usage() for every option.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { exportJWK, generateKeyPair } from 'jose';
import pg from 'pg';
import { AccountRepository } from '../src/persistence/account.repository.js';
import { MEMORY_DATA_DIR, openDatabase } from '../src/persistence/database.js';
import { freePort, spawnTsx, waitForHttp, type ChildHandle, type ChildLine } from './lib/child.js';
import { discoverRp, LoginError, REDIRECT_URI, runLogin, timeUserIdStep, type LoginSample } from './lib/login-driver.js';
import { startOtpSink, type OtpSink } from './lib/otp-sink.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MAIL_DOMAIN = 'bench.example.test';
const HIGH_LIMIT = '1000000';

interface Options {
  logins: number;
  concurrency: number;
  warmup: number;
  databaseUrl: string | undefined;
}

function usage(): string {
  return `usage: npm run bench -- [--logins N] [--concurrency C] [--warmup W] [--database-url URL]
  --logins N          logins measured per provider (default 200; env BENCH_LOGINS)
  --concurrency C     concurrent workers (default 10; env BENCH_CONCURRENCY)
  --warmup W          logins run first and not counted (default C; env BENCH_WARMUP)
  --database-url URL  PostgreSQL for the provider (env BENCH_DATABASE_URL); default: a fresh
                      database bench_<random> on PGHOST:PGPORT (127.0.0.1:5432, user postgres), dropped afterwards`;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      logins: { type: 'string' },
      concurrency: { type: 'string' },
      warmup: { type: 'string' },
      'database-url': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(usage());
    process.exit(0);
  }
  const int = (name: string, raw: string | undefined, fallback: number, min: number) => {
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min}, got "${raw}"\n${usage()}`);
    return n;
  };
  const env = process.env;
  const logins = int('--logins', values.logins ?? env.BENCH_LOGINS, 200, 1);
  const concurrency = int('--concurrency', values.concurrency ?? env.BENCH_CONCURRENCY, 10, 1);
  const warmup = int('--warmup', values.warmup ?? env.BENCH_WARMUP, concurrency, 0);
  return { logins, concurrency, warmup, databaseUrl: values['database-url'] ?? (env.BENCH_DATABASE_URL || undefined) };
}

// ---- cleanup, whatever happens -------------------------------------------------------------------

const cleanups: Array<{ name: string; run: () => Promise<void> }> = [];
let cleaning: Promise<void> = Promise.resolve();
/** The signal that interrupted the run; main() stops at its next checkpoint. */
let interrupted: NodeJS.Signals | undefined;

class Interrupted extends Error {}

function checkInterrupted(): void {
  if (interrupted) throw new Interrupted(`interrupted by ${interrupted}`);
}

/** Runs the registered steps last-in first-out (children stop before their database is dropped). */
function cleanup(): Promise<void> {
  cleaning = cleaning.then(async () => {
    for (const step of cleanups.splice(0).reverse()) {
      try {
        await step.run();
      } catch (e) {
        console.error(`cleanup (${step.name}) failed: ${(e as Error).message}`);
      }
    }
  });
  return cleaning;
}

function onCleanup(name: string, run: () => Promise<void>): void {
  cleanups.push({ name, run });
  // Something started while a signal was being handled is undone at once.
  if (interrupted) void cleanup();
}

const SIGNAL_EXIT = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
for (const signal of Object.keys(SIGNAL_EXIT) as Array<keyof typeof SIGNAL_EXIT>) {
  process.once(signal, () => {
    console.error(`\n${signal}: stopping the providers and cleaning up…`);
    interrupted = signal;
    // Stopping the children now makes logins in flight fail fast; main() then cleans up what is left and exits.
    void cleanup();
  });
}

// ---- PostgreSQL ----------------------------------------------------------------------------------

async function createBenchDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const host = process.env.PGHOST ?? '127.0.0.1';
  const port = Number(process.env.PGPORT ?? 5432);
  const user = process.env.PGUSER ?? 'postgres';
  const name = `bench_${randomBytes(6).toString('hex')}`;
  const admin = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = new pg.Client({ host, port, user, password: process.env.PGPASSWORD, database: 'postgres' });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };
  await admin((c) => c.query(`CREATE DATABASE "${name}"`));
  const auth = process.env.PGPASSWORD ? `${encodeURIComponent(user)}:${encodeURIComponent(process.env.PGPASSWORD)}` : encodeURIComponent(user);
  return {
    url: `postgresql://${auth}@${host}:${port}/${name}`,
    drop: () =>
      admin(async (c) => {
        // A connection left behind would make DROP DATABASE fail.
        await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
        await c.query(`DROP DATABASE IF EXISTS "${name}"`);
      }),
  };
}

// ---- running logins ------------------------------------------------------------------------------

interface RunResult {
  samples: LoginSample[];
  attempted: number;
  wallMs: number;
  failures: Map<string, number>;
  statuses5xx: number;
}

async function runMany(count: number, concurrency: number, login: (i: number) => Promise<LoginSample>): Promise<RunResult> {
  const result: RunResult = { samples: [], attempted: count, wallMs: 0, failures: new Map(), statuses5xx: 0 };
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < count && !interrupted) {
      const i = next++;
      try {
        result.samples.push(await login(i));
      } catch (e) {
        if (e instanceof LoginError && e.status !== undefined && e.status >= 500) result.statuses5xx++;
        // Distinct failures are counted once per kind: interaction ids and codes would make each unique.
        const message = (e as Error).message.replace(/\/interaction\/[\w-]+/g, '/interaction/<uid>').replace(/b-[\w-]+@/g, '<user>@');
        result.failures.set(message, (result.failures.get(message) ?? 0) + 1);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  result.wallMs = performance.now() - t0;
  return result;
}

interface TargetReport {
  name: string;
  run: RunResult;
  peakRss: { pid: number; kb: number } | undefined;
  /** CPU time the provider used during the measured run. */
  cpuMs: number | undefined;
  lines: ChildLine[];
  /** Milliseconds of the user-ID step per kind of user ID (ascending). */
  userIdStep?: Record<string, number[]>;
}

interface Target {
  name: string;
  script: string;
  env: Record<string, string>;
  clientId: string;
  clientSecret: string;
  /** Makes the accounts for `count` logins (user IDs unique to this target). */
  prepareAccounts(count: number): Promise<Array<{ userId: string; email: string }>>;
  /** User IDs by kind (live, pending, unknown) for timing the user-ID step alone, after the logins. */
  prepareUserIdProbe?(perKind: number): Promise<Record<string, string[]>>;
}

/** Kinds of user ID whose user-ID step is timed, each this many times, interleaved and one at a time. */
const PROBE_PER_KIND = 100;

async function benchmarkTarget(target: Target, sink: OtpSink, opts: Options): Promise<TargetReport> {
  checkInterrupted();
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const child: ChildHandle = spawnTsx(target.name, target.script, { ...target.env, PORT: String(port), ISSUER: issuer }, ROOT);
  onCleanup(`stop ${target.name}`, () => child.stop());
  await waitForHttp(child, `${issuer}/health`);

  const users = await target.prepareAccounts(opts.warmup + opts.logins);
  const rp = await discoverRp(issuer, target.clientId, target.clientSecret);
  const login = (offset: number) => (i: number) => runLogin(rp, issuer, sink, users[offset + i]!);

  child.phase = 'warm-up';
  if (opts.warmup > 0) {
    process.stderr.write(`${target.name}: ${opts.warmup} warm-up logins… `);
    const w = await runMany(opts.warmup, opts.concurrency, login(0));
    checkInterrupted();
    process.stderr.write(`${w.samples.length} ok\n`);
  }
  child.phase = 'run';
  process.stderr.write(`${target.name}: ${opts.logins} logins with ${opts.concurrency} workers… `);
  const cpuBefore = child.cpuMs();
  const run = await runMany(opts.logins, opts.concurrency, login(opts.warmup));
  const cpuAfter = child.cpuMs();
  checkInterrupted();
  process.stderr.write(`${run.samples.length} ok in ${(run.wallMs / 1000).toFixed(1)} s\n`);
  const peakRss = child.peakRssKb();
  let userIdStep: Record<string, number[]> | undefined;
  if (target.prepareUserIdProbe) {
    child.phase = 'user-ID probe';
    const ids = await target.prepareUserIdProbe(PROBE_PER_KIND);
    process.stderr.write(`${target.name}: user-ID step, ${PROBE_PER_KIND} times each for ${Object.keys(ids).join(', ')}… `);
    userIdStep = Object.fromEntries(Object.keys(ids).map((k) => [k, [] as number[]]));
    // Interleaved, so a slower moment of the machine hits every kind alike.
    for (let i = 0; i < PROBE_PER_KIND && !interrupted; i++)
      for (const [kind, list] of Object.entries(ids)) userIdStep[kind]!.push(await timeUserIdStep(rp, issuer, list[i]!));
    for (const xs of Object.values(userIdStep)) xs.sort((p, q) => p - q);
    checkInterrupted();
    process.stderr.write('done\n');
  }
  await child.stop();
  const exit = child.exitCode();
  if (exit !== 0) child.lines.push({ phase: 'shutdown', stream: 'stderr', text: `process exited with ${exit}` });
  const cpuMs = cpuBefore !== undefined && cpuAfter !== undefined ? cpuAfter - cpuBefore : undefined;
  return { name: target.name, run, peakRss, cpuMs, lines: child.lines, ...(userIdStep ? { userIdStep } : {}) };
}

// ---- report --------------------------------------------------------------------------------------

/** Nearest-rank percentile of an ascending array. */
function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

interface Figures {
  throughput: number;
  total: number[];
  exclMail: number[];
  mailWait: number[];
  mailDelivery: number[];
}

function figuresOf(run: RunResult): Figures {
  const asc = (xs: number[]) => xs.sort((a, b) => a - b);
  return {
    throughput: run.samples.length / (run.wallMs / 1000),
    total: asc(run.samples.map((s) => s.totalMs)),
    exclMail: asc(run.samples.map((s) => s.totalMs - s.mailWaitMs)),
    mailWait: asc(run.samples.map((s) => s.mailWaitMs)),
    mailDelivery: asc(run.samples.map((s) => s.mailDeliveryMs)),
  };
}

function printReport(opts: Options, ours: TargetReport, bare: TargetReport, database: string): void {
  const a = figuresOf(ours.run);
  const b = figuresOf(bare.run);
  const ms = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : '-');
  const ratio = (x: number, y: number) => (Number.isFinite(x) && Number.isFinite(y) && y > 0 ? `${(x / y).toFixed(2)}x` : '-');
  const rows: Array<[string, string, string, string]> = [];
  const row = (label: string, x: number, y: number, fmt: (v: number) => string) => rows.push([label, fmt(x), fmt(y), ratio(x, y)]);

  rows.push(['logins ok / measured', `${ours.run.samples.length}/${ours.run.attempted}`, `${bare.run.samples.length}/${bare.run.attempted}`, '']);
  row('throughput (logins/s)', a.throughput, b.throughput, (v) => v.toFixed(1));
  for (const [label, xs, ys] of [
    ['latency (ms, mail included)', a.total, b.total],
    ['latency excl. mail wait (ms)', a.exclMail, b.exclMail],
  ] as const) {
    rows.push([label, '', '', '']);
    for (const p of [50, 95, 99]) row(`  p${p}`, percentile(xs, p), percentile(ys, p), ms);
    row('  max', xs[xs.length - 1] ?? Number.NaN, ys[ys.length - 1] ?? Number.NaN, ms);
  }
  rows.push(['mail wait on OTP page (ms)', '', '', '']);
  for (const p of [50, 95]) row(`  p${p}`, percentile(a.mailWait, p), percentile(b.mailWait, p), ms);
  rows.push(['mail delivery (ms)', '', '', '']);
  for (const p of [50, 95]) row(`  p${p}`, percentile(a.mailDelivery, p), percentile(b.mailDelivery, p), ms);
  const rss = (r: TargetReport) => (r.peakRss ? `${(r.peakRss.kb / 1024).toFixed(0)} MiB` : 'n/a');
  rows.push(['peak RSS, VmHWM', rss(ours), rss(bare), ours.peakRss && bare.peakRss ? ratio(ours.peakRss.kb, bare.peakRss.kb) : '']);
  const cpu = (r: TargetReport) => (r.cpuMs !== undefined && r.run.samples.length ? r.cpuMs / r.run.samples.length : Number.NaN);
  row('provider CPU per login (ms)', cpu(ours), cpu(bare), ms);
  const busy = (r: TargetReport) => (r.cpuMs !== undefined ? (100 * r.cpuMs) / r.run.wallMs : Number.NaN);
  row('provider CPU busy (% of 1 core)', busy(ours), busy(bare), (v) => (Number.isFinite(v) ? v.toFixed(0) : '-'));
  rows.push(['HTTP 5xx during run', String(ours.run.statuses5xx), String(bare.run.statuses5xx), '']);
  const runLines = (r: TargetReport) => r.lines.filter((l) => l.phase === 'run').length;
  rows.push(['warn/error log lines in run', String(runLines(ours)), String(runLines(bare)), '']);

  // Where the time goes, step by step (p50 of each step on its own).
  const stepNames = [...new Set([...ours.run.samples, ...bare.run.samples].flatMap((x) => Object.keys(x.steps)))];
  const stepP50 = (r: TargetReport, name: string) => percentile(r.run.samples.map((x) => x.steps[name] ?? 0).sort((p, q) => p - q), 50);
  const stepRows = stepNames.map((n): [string, string, string, string] => [`  ${n}`, ms(stepP50(ours, n)), ms(stepP50(bare, n)), ratio(stepP50(ours, n), stepP50(bare, n))]);

  const widths = [0, 1, 2, 3].map((i) => Math.max(...[['', 'ours', 'bare', 'ours/bare'], ...rows, ...stepRows].map((r) => r[i]!.length)));
  const line = (r: readonly string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('   ');

  console.log('');
  console.log(`Login benchmark: ${opts.logins} logins per provider, ${opts.concurrency} concurrent workers, after ${opts.warmup} warm-up logins (not counted).`);
  console.log(`  ours = tsx src/main.ts, NODE_ENV=production, PostgreSQL (${database}), in-process mail queue, no Redis`);
  console.log('  bare = bench/bare-provider.ts: oidc-provider with its in-memory adapter, minimal user-ID + OTP interaction');
  console.log(`  Node ${process.version}, ${availableParallelism()} CPUs shared by the bench client, the SMTP sink and the provider.`);
  console.log('  One login = authorize (PKCE) → user-ID page → submit → OTP page → wait for mail → submit OTP → redirects → code grant.');
  console.log('  Latency includes mail delivery (both providers send over SMTP to a sink in the bench process, one');
  console.log('  connection per message). "excl. mail wait" subtracts the time the user sat on the loaded OTP page');
  console.log('  waiting for the mail; "mail delivery" = user-ID response → message parsed at the sink (about 100 ms');
  console.log('  of it is the fixed pre-greeting delay of the smtp-server package, the same for both).');
  console.log('');
  console.log(line(['', 'ours', 'bare', 'ours/bare']));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const r of rows) console.log(line(r));

  console.log(line(['p50 per step (ms)', '', '', '']));
  for (const r of stepRows) console.log(line(r));

  if (ours.userIdStep) {
    console.log('');
    console.log(`User-ID step alone (ours; submit → response), ${PROBE_PER_KIND} per kind of ID, one at a time, interleaved:`);
    for (const [kind, xs] of Object.entries(ours.userIdStep)) console.log(`  ${kind.padEnd(8)} p50 ${ms(percentile(xs, 50))} ms   p95 ${ms(percentile(xs, 95))} ms`);
  }

  for (const r of [ours, bare]) {
    if (r.run.failures.size) {
      console.log(`\n${r.name}: failed logins`);
      for (const [m, n] of r.run.failures) console.log(`  ${n}x ${m}`);
    }
    const distinct = new Map<string, number>();
    for (const l of r.lines) {
      const key = `[${l.phase} ${l.stream}] ${l.text.length > 400 ? `${l.text.slice(0, 400)}…` : l.text}`;
      distinct.set(key, (distinct.get(key) ?? 0) + 1);
    }
    if (distinct.size) {
      console.log(`\n${r.name}: warnings and errors the provider wrote (${r.lines.length} lines, ${distinct.size} distinct)`);
      for (const [m, n] of [...distinct].slice(0, 15)) console.log(`  ${n}x ${m}`);
    }
  }
}

// ---- main ----------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const opts = parseOptions();
  const runId = randomBytes(3).toString('hex');

  const sink = await startOtpSink();
  onCleanup('SMTP sink', () => sink.close());

  let databaseUrl = opts.databaseUrl;
  let database = 'given database';
  if (!databaseUrl) {
    const created = await createBenchDatabase();
    onCleanup('drop database', () => created.drop());
    databaseUrl = created.url;
    database = `fresh database ${new URL(databaseUrl).pathname.slice(1)}`;
  }

  // Secrets for this run only, as production requires them explicitly.
  const { privateKey } = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(privateKey)), kid: `bench-${runId}`, use: 'sig', alg: 'RS256' }] });
  const cookieKeys = randomBytes(32).toString('base64url');
  const clientId = 'bench-rp';
  const clientSecret = randomBytes(24).toString('base64url');
  const tenantId = `bench-${runId}`;

  const dir = mkdtempSync(join(tmpdir(), 'idp-bench-'));
  onCleanup('temp folder', async () => rmSync(dir, { recursive: true, force: true }));
  const tenantsFile = join(dir, 'tenants.yaml');
  writeFileSync(
    tenantsFile,
    `tenants:
  - id: ${tenantId}
    name: Benchmark
    contract: { login_methods: [otp] }
    clients:
      - { client_id: ${clientId}, client_secret: ${clientSecret}, name: Benchmark site, redirect_uris: ['${REDIRECT_URI}'] }
`,
  );

  const userFor = (prefix: string, i: number) => {
    const userId = `b-${runId}-${prefix}-${i}`;
    return { userId, email: `${userId}@${MAIL_DOMAIN}` };
  };

  const ours = await benchmarkTarget(
    {
      name: 'ours',
      script: 'src/main.ts',
      clientId,
      clientSecret,
      env: {
        NODE_ENV: 'production',
        HOST: '127.0.0.1',
        DATABASE_URL: databaseUrl,
        DATA_DIR: join(dir, 'data'),
        SMTP_URL: sink.url,
        TENANTS_FILE: tenantsFile,
        JWKS: jwks,
        COOKIE_KEYS: cookieKeys,
        OTP_HMAC_KEY: randomBytes(32).toString('base64url'),
        RATE_LIMIT_IP_PER_MINUTE: HIGH_LIMIT,
        RATE_LIMIT_ACCOUNT_OTP_PER_15MIN: HIGH_LIMIT,
        RATE_LIMIT_OTP_MAILS_PER_HOUR: HIGH_LIMIT,
        DEV_MAILBOX: 'false',
        DEMO_SITE: 'false',
        SEED_DEMO: 'false',
        LOG_LEVEL: 'warn',
      },
      async prepareAccounts(count) {
        // The provider has applied the migrations by now; this only opens a pool.
        const db = await openDatabase({ databaseUrl, dataDir: MEMORY_DATA_DIR });
        onCleanup('bench database connection', async () => {
          // On a database we did not create, leave nothing of ours behind (devices, flows, events cascade).
          if (opts.databaseUrl) await db.prisma.account.deleteMany({ where: { tenantId } });
          await db.close();
        });
        const accounts = new AccountRepository(db.prisma);
        const users = Array.from({ length: count }, (_, i) => userFor('o', i));
        for (let i = 0; i < users.length; i += 20)
          await Promise.all(users.slice(i, i + 20).map((u) => accounts.create({ tenantId, userId: u.userId, devices: [{ email: u.email }] })));
        return users;
      },
      async prepareUserIdProbe(perKind) {
        const db = await openDatabase({ databaseUrl, dataDir: MEMORY_DATA_DIR });
        try {
          const accounts = new AccountRepository(db.prisma);
          const kinds = { live: 'active', pending: 'pending_activation', unknown: undefined } as const;
          const ids: Record<string, string[]> = {};
          for (const [kind, status] of Object.entries(kinds)) {
            const users = Array.from({ length: perKind }, (_, i) => userFor(`probe-${kind}`, i));
            if (status) for (const u of users) await accounts.create({ tenantId, userId: u.userId, status, devices: [{ email: u.email }] });
            ids[kind] = users.map((u) => u.userId);
          }
          return ids;
        } finally {
          await db.close();
        }
      },
    },
    sink,
    opts,
  );

  const bare = await benchmarkTarget(
    {
      name: 'bare',
      script: 'bench/bare-provider.ts',
      clientId,
      clientSecret,
      env: {
        NODE_ENV: 'production',
        SMTP_URL: sink.url,
        CLIENT_ID: clientId,
        CLIENT_SECRET: clientSecret,
        REDIRECT_URI,
        MAIL_DOMAIN,
        JWKS: jwks,
        COOKIE_KEYS: cookieKeys,
      },
      prepareAccounts: async (count) => Array.from({ length: count }, (_, i) => userFor('b', i)),
    },
    sink,
    opts,
  );

  printReport(opts, ours, bare, database);
  const s = sink.stats();
  if (s.withoutOtp || s.parseErrors) console.log(`\nSMTP sink: ${s.messages} messages, ${s.withoutOtp} without an OTP, ${s.parseErrors} unparsable`);
}

let exitCode = 0;
try {
  await main();
} catch (e) {
  if (!interrupted) {
    console.error(`benchmark failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    exitCode = 1;
  }
} finally {
  await cleanup();
}
if (interrupted) exitCode = SIGNAL_EXIT[interrupted as keyof typeof SIGNAL_EXIT];
// Keep-alive sockets to the stopped providers would otherwise hold the event loop a while.
process.exit(exitCode);
