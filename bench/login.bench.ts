// Login throughput and latency of the provider, run as its own process on PostgreSQL, against a bare
// oidc-provider (in-memory, minimal interaction of the same shape) as the baseline; then password
// logins, refresh_token and client_credentials grants, SQL statements per login (through a counting
// proxy, in a separate provider instance) and latency with a million accounts.
// `npm run bench -- --logins 500 --concurrency 20`; see usage() for every option.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { exportJWK, generateKeyPair } from 'jose';
import type * as oidc from 'openid-client';
import pg from 'pg';
import { hashSecret } from '../src/credentials/hashing.js';
import { AccountRepository } from '../src/persistence/account.repository.js';
import { MEMORY_DATA_DIR, openDatabase, type Database } from '../src/persistence/database.js';
import { freePort, postgresCpuMs, spawnTsx, waitForHttp, type ChildHandle, type ChildLine } from './lib/child.js';
import {
  clientCredentialsGrant,
  discoverRp,
  LoginError,
  REDIRECT_URI,
  refreshGrant,
  runLogin,
  timeUserIdStep,
  type AfterStep,
  type LoginProof,
  type LoginSample,
} from './lib/login-driver.js';
import { startOtpSink, type OtpSink } from './lib/otp-sink.js';
import { diffCounts, startPgCounter, type PgCounter, type StatementCounts } from './lib/pg-counter.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MAIL_DOMAIN = 'bench.example.test';
const HIGH_LIMIT = '1000000';
const PASSWORD = 'kiri-no-naka-no-fune-42';
/** The back office's scope for its client_credentials tokens (the management API). */
const MANAGEMENT_SCOPE = 'management';

/** The performance targets the report checks. */
const TARGETS = { statementsPerLogin: 25, passwordLoginsPerSecond: 40, millionRatio: 1.1 } as const;

interface Options {
  logins: number;
  concurrency: number;
  warmup: number;
  databaseUrl: string | undefined;
  /** Which providers to run; ours-only phases need ours. */
  ours: boolean;
  bare: boolean;
  passwordLogins: number;
  grants: number;
  sqlLogins: number;
  sqlLog: boolean;
  /** OTP logins per provider, one at a time, with the provider's CPU read after each step. */
  stepCpu: number;
  /** OTP logins per provider started at `rate` per second whatever the answers (equal load for both). */
  rateLogins: number;
  /** User-ID steps per kind of ID (live, pending, unknown), timed one at a time once the provider is quiet. */
  probes: number;
  rate: number;
  million: boolean;
  scaleLogins: number;
  webConcurrency: string | undefined;
  /** Run our provider from source with tsx instead of the production build (`npm run start:prod`). */
  tsx: boolean;
}

function usage(): string {
  return `usage: npm run bench -- [options]
  --logins N             OTP logins measured per provider (default 200; env BENCH_LOGINS)
  --concurrency C        concurrent workers for every throughput run (default 10; env BENCH_CONCURRENCY)
  --warmup W             logins (and grants) run first and not counted (default C; env BENCH_WARMUP)
  --database-url URL     PostgreSQL for the provider (env BENCH_DATABASE_URL); default: a fresh
                         database bench_<random> on PGHOST:PGPORT (127.0.0.1:5432, user postgres), dropped afterwards
  --only ours|bare       run one provider only (ours-only sections need ours)
  --skip-bare            the same as --only ours
  --password-logins N    password logins (ours; tenant with the password method), 0 to skip (default: --logins)
  --grants N             refresh_token and client_credentials grants each, per provider, 0 to skip (default 1000)
  --sql-logins N         OTP logins, one at a time, through the SQL-counting proxy (ours; a separate
                         provider instance), 0 to skip (default 20)
  --step-cpu N           OTP logins per provider, one at a time and alternating, with the provider's CPU
                         time read after each step (per-thread scheduler time, nanoseconds): where a login's
                         CPU goes, step by step, ours next to bare; 0 to skip (default 50)
  --rate-logins N        OTP logins per provider started at a fixed rate (--rate), whether or not earlier
                         ones have finished, in alternating rounds: CPU per login with both providers under
                         the same load, below what either saturates; 0 to skip (default 200)
  --rate R               logins started per second in that run (default 15)
  --probes N             user-ID steps per kind of ID (live, pending, unknown) timed one at a time, each
                         once the provider is quiet; 0 to skip (a profiled provider is never quiet) (default 100)
  --sql-log              also print the distinct SQL statements of one OTP login (and of one password
                         login and one grant of each kind) with counts, to see what repeats
  --million              latency with 1,000,000 accounts vs 1,000 (ours; default on): two more databases
                         on the same server (the large one seeded in about 35-50 s), dropped afterwards
  --no-million           skip that comparison
  --scale-logins N       OTP logins per database size in that comparison (default 100)
  --tsx                  run our provider from source (tsx src/main.ts) instead of the production build:
                         by default the bench runs \`npm run build\` and starts what \`npm run start:prod\` runs
                         (BENCH_PROVIDER_CMD, when set, is started instead of either)
  --web-concurrency N    WEB_CONCURRENCY for our provider (Node cluster workers); RSS and CPU are summed
                         over all its node processes (default: not set; env BENCH_WEB_CONCURRENCY)
  -h, --help             this text`;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      logins: { type: 'string' },
      concurrency: { type: 'string' },
      warmup: { type: 'string' },
      'database-url': { type: 'string' },
      only: { type: 'string' },
      'skip-bare': { type: 'boolean' },
      'password-logins': { type: 'string' },
      grants: { type: 'string' },
      'sql-logins': { type: 'string' },
      'step-cpu': { type: 'string' },
      'rate-logins': { type: 'string' },
      probes: { type: 'string' },
      rate: { type: 'string' },
      'sql-log': { type: 'boolean' },
      million: { type: 'boolean' },
      'no-million': { type: 'boolean' },
      'scale-logins': { type: 'string' },
      'web-concurrency': { type: 'string' },
      tsx: { type: 'boolean' },
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
  const only = values['skip-bare'] ? 'ours' : values.only;
  if (only !== undefined && only !== 'ours' && only !== 'bare') throw new Error(`--only must be ours or bare, got "${only}"\n${usage()}`);
  if (values.million && values['no-million']) throw new Error(`--million and --no-million contradict each other\n${usage()}`);
  const webConcurrency = values['web-concurrency'] ?? (env.BENCH_WEB_CONCURRENCY || undefined);
  if (webConcurrency !== undefined) int('--web-concurrency', webConcurrency, 0, 1);
  return {
    logins,
    concurrency,
    warmup,
    databaseUrl: values['database-url'] ?? (env.BENCH_DATABASE_URL || undefined),
    ours: only !== 'bare',
    bare: only !== 'ours',
    passwordLogins: int('--password-logins', values['password-logins'], logins, 0),
    grants: int('--grants', values.grants, 1000, 0),
    sqlLogins: int('--sql-logins', values['sql-logins'], 20, 0),
    stepCpu: int('--step-cpu', values['step-cpu'], 50, 0),
    rateLogins: int('--rate-logins', values['rate-logins'], 200, 0),
    probes: int('--probes', values.probes, 100, 0),
    rate: int('--rate', values.rate, 15, 1),
    sqlLog: values['sql-log'] === true,
    million: !values['no-million'],
    scaleLogins: int('--scale-logins', values['scale-logins'], 100, 1),
    webConcurrency,
    tsx: values.tsx === true,
  };
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

/**
 * Creates an empty database on the server of `like` (a connection string; its credentials are used),
 * or on PGHOST:PGPORT as PGUSER (default 127.0.0.1:5432, postgres).
 */
async function createBenchDatabase(like?: string): Promise<{ url: string; drop(): Promise<void> }> {
  const base = like ? new URL(like) : undefined;
  const host = base ? base.hostname : (process.env.PGHOST ?? '127.0.0.1');
  const port = base ? Number(base.port || 5432) : Number(process.env.PGPORT ?? 5432);
  const user = base ? decodeURIComponent(base.username) || 'postgres' : (process.env.PGUSER ?? 'postgres');
  const password = base ? decodeURIComponent(base.password) || undefined : process.env.PGPASSWORD;
  const name = `bench_${randomBytes(6).toString('hex')}`;
  const admin = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = new pg.Client({ host, port, user, password, database: 'postgres' });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };
  await admin((c) => c.query(`CREATE DATABASE "${name}"`));
  const auth = password ? `${encodeURIComponent(user)}:${encodeURIComponent(password)}` : encodeURIComponent(user);
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

// ---- running operations concurrently ------------------------------------------------------------

interface RunResult<T> {
  samples: T[];
  attempted: number;
  wallMs: number;
  failures: Map<string, number>;
  statuses5xx: number;
}

/** Runs `count` operations with `concurrency` workers; `op` gets the operation's index and its worker's. */
/** Counts a failed operation: its 5xx, and its message (once per kind). */
function recordFailure(result: RunResult<unknown>, e: unknown): void {
  if (e instanceof LoginError && e.status !== undefined && e.status >= 500) result.statuses5xx++;
  // Distinct failures are counted once per kind: interaction ids and codes would make each unique.
  const message = (e as Error).message.replace(/\/interaction\/[\w-]+/g, '/interaction/<uid>').replace(/b-[\w-]+@/g, '<user>@');
  result.failures.set(message, (result.failures.get(message) ?? 0) + 1);
}

async function runMany<T>(count: number, concurrency: number, op: (i: number, worker: number) => Promise<T>): Promise<RunResult<T>> {
  const result: RunResult<T> = { samples: [], attempted: count, wallMs: 0, failures: new Map(), statuses5xx: 0 };
  let next = 0;
  const t0 = performance.now();
  const worker = async (w: number) => {
    while (next < count && !interrupted) {
      const i = next++;
      try {
        result.samples.push(await op(i, w));
      } catch (e) {
        recordFailure(result, e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, (_, w) => worker(w)));
  result.wallMs = performance.now() - t0;
  return result;
}

/** Milliseconds an operation took. */
async function timed(op: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await op();
  return performance.now() - t0;
}

interface Measured<T> {
  run: RunResult<T>;
  /** CPU time the provider used during the measured run. */
  cpuMs: number | undefined;
  /** CPU time this host's PostgreSQL used meanwhile (undefined: none on this host). */
  dbCpuMs?: number | undefined;
  /** CPU time of the bench process itself meanwhile: the clients and the SMTP sink. */
  benchCpuMs?: number;
}

/** A warm-up (not counted), then the measured run with the provider's CPU time around it. */
async function measure<T>(
  child: ChildHandle,
  label: string,
  counts: { warmup: number; measured: number; concurrency: number },
  op: (i: number, worker: number) => Promise<T>,
): Promise<Measured<T>> {
  checkInterrupted();
  if (counts.warmup > 0) {
    child.phase = `${label} warm-up`;
    process.stderr.write(`${child.label}: ${counts.warmup} warm-up ${label}… `);
    const w = await runMany(counts.warmup, counts.concurrency, op);
    checkInterrupted();
    process.stderr.write(`${w.samples.length} ok\n`);
  }
  child.phase = label;
  process.stderr.write(`${child.label}: ${counts.measured} ${label} with ${counts.concurrency} workers… `);
  const cpuBefore = child.cpuMs();
  const run = await runMany(counts.measured, counts.concurrency, (i, w) => op(counts.warmup + i, w));
  const cpuAfter = child.cpuMs();
  checkInterrupted();
  process.stderr.write(`${run.samples.length} ok in ${(run.wallMs / 1000).toFixed(1)} s\n`);
  return { run, cpuMs: cpuBefore !== undefined && cpuAfter !== undefined ? cpuAfter - cpuBefore : undefined };
}

// ---- one provider --------------------------------------------------------------------------------

interface TargetReport {
  name: string;
  otp: Measured<LoginSample>;
  peakRss: { pids: number[]; kb: number } | undefined;
  /** Node processes of the provider seen during the OTP run. */
  processes: number;
  lines: ChildLine[];
  /** Milliseconds of the user-ID step per kind of user ID (ascending). */
  userIdStep?: Record<string, number[]>;
  password?: Measured<LoginSample>;
  refresh?: Measured<number>;
  clientCredentials?: Measured<number>;
}

interface Client {
  id: string;
  secret: string;
}

interface Target {
  name: string;
  script: string;
  env: Record<string, string>;
  client: Client;
  /** A back office allowed client_credentials for the management scope. */
  backoffice: Client;
  /** Makes the accounts for `count` logins (user IDs unique to this target). */
  prepareAccounts(count: number): Promise<User[]>;
  /** User IDs by kind (live, pending, unknown) for timing the user-ID step alone, after the logins. */
  prepareUserIdProbe?(perKind: number): Promise<Record<string, string[]>>;
  /** Password logins: a client of a tenant allowing the method, and its accounts (all with PASSWORD). */
  password?: { client: Client; prepareAccounts(count: number): Promise<User[]> };
}

interface User {
  userId: string;
  email: string;
}

/** OTP logins per provider in one round of the alternating comparison (at least the concurrency). */
const OTP_ROUND = 50;

/** Kinds of user ID whose user-ID step is timed, each this many times, interleaved and one at a time. */

async function startProvider(name: string, script: string, env: Record<string, string>): Promise<{ child: ChildHandle; issuer: string }> {
  checkInterrupted();
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const child = spawnTsx(name, script, { ...env, PORT: String(port), ISSUER: issuer }, ROOT);
  onCleanup(`stop ${name}`, () => child.stop());
  await waitForHttp(child, `${issuer}/health`);
  // A cluster answers as soon as its first worker listens; the others start after it. Measuring
  // begins once all of them are up and idle.
  const workers = Number(env.WEB_CONCURRENCY ?? 1);
  if (workers > 1) {
    const seen = await child.settle(workers + 1);
    if (seen < workers + 1) child.lines.push({ phase: 'startup', stream: 'stderr', text: `WEB_CONCURRENCY=${workers}, but node processes running the provider: ${seen}` });
  }
  return { child, issuer };
}

async function stopProvider(child: ChildHandle): Promise<void> {
  await child.stop();
  const exit = child.exitCode();
  if (exit !== 0) child.lines.push({ phase: 'shutdown', stream: 'stderr', text: `process exited with ${exit}` });
}

/** A provider started, with its accounts and relying party, before its OTP logins are measured. */
interface Started {
  target: Target;
  child: ChildHandle;
  issuer: string;
  rp: oidc.Configuration;
  users: User[];
  /** Node processes of the provider seen during the OTP run. */
  processes: number;
}

async function startTarget(target: Target, opts: Options): Promise<Started> {
  const { child, issuer } = await startProvider(target.name, target.script, target.env);
  const users = await target.prepareAccounts(opts.warmup + opts.logins + opts.stepCpu + opts.rateLogins);
  const rp = await discoverRp(issuer, target.client.id, target.client.secret);
  return { target, child, issuer, rp, users, processes: 0 };
}

/**
 * The OTP logins of every started provider, in alternating rounds (a, b, b, a, …) after each one's
 * warm-up: the providers run one at a time, and a busier moment of the shared machine weighs on all
 * of them alike. Each provider's CPU is summed over its own rounds.
 */
async function measureOtpRounds(started: Started[], sink: OtpSink, opts: Options): Promise<Array<Measured<LoginSample>>> {
  const otpProof: LoginProof = { kind: 'otp', sink };
  const login = (side: Started) => (i: number) => {
    side.processes = Math.max(side.processes, side.child.scriptPids().length);
    return runLogin(side.rp, side.issuer, otpProof, side.users[i]!);
  };
  for (const side of started) {
    if (opts.warmup <= 0) continue;
    checkInterrupted();
    side.child.phase = 'OTP logins warm-up';
    process.stderr.write(`${side.child.label}: ${opts.warmup} warm-up OTP logins… `);
    const w = await runMany(opts.warmup, opts.concurrency, login(side));
    process.stderr.write(`${w.samples.length} ok\n`);
  }
  const round = started.length > 1 ? Math.max(opts.concurrency, OTP_ROUND) : opts.logins;
  const rounds = Math.ceil(opts.logins / round);
  process.stderr.write(`${started.map((x) => x.child.label).join(', ')}: ${opts.logins} OTP logins each with ${opts.concurrency} workers${rounds > 1 ? `, in ${rounds} alternating rounds of ${round}` : ''}… `);
  const results = await alternatingRounds(started, { total: opts.logins, round, first: opts.warmup, phase: 'OTP logins' }, (side, first, n) =>
    runMany(n, opts.concurrency, (i) => login(side)(first + i)),
  );
  process.stderr.write(`${results.map((x) => x.run.samples.length).join(' / ')} ok\n`);
  return results;
}

/**
 * Runs `total` logins per provider in rounds of `round`, alternating (a, b, b, a, …): the providers run
 * one at a time, and a busier moment of the shared machine weighs on all of them alike. Each
 * provider's CPU (and PostgreSQL's, and the bench's own meanwhile) is summed over its own rounds.
 * `run(side, first, n)` runs logins `first` to `first + n - 1` of that provider's users.
 */
async function alternatingRounds(
  started: Started[],
  plan: { total: number; round: number; first: number; phase: string },
  run: (side: Started, first: number, n: number) => Promise<RunResult<LoginSample>>,
): Promise<Array<Measured<LoginSample>>> {
  const results = started.map((): Measured<LoginSample> & { run: RunResult<LoginSample> } => ({
    run: { samples: [], attempted: 0, wallMs: 0, failures: new Map(), statuses5xx: 0 },
    cpuMs: 0,
    dbCpuMs: 0,
    benchCpuMs: 0,
  }));
  const rounds = Math.ceil(plan.total / plan.round);
  for (let r = 0; r < rounds; r++) {
    const order = started.map((_, k) => k);
    if (r % 2 === 1) order.reverse();
    for (const k of order) {
      checkInterrupted();
      const side = started[k]!;
      side.child.phase = plan.phase;
      const cpuBefore = side.child.cpuMs();
      const dbBefore = postgresCpuMs();
      const benchBefore = process.cpuUsage();
      const done = await run(side, plan.first + r * plan.round, Math.min(plan.round, plan.total - r * plan.round));
      const bench = process.cpuUsage(benchBefore);
      const cpuAfter = side.child.cpuMs();
      const dbAfter = postgresCpuMs();
      const acc = results[k]!;
      acc.benchCpuMs = (acc.benchCpuMs ?? 0) + (bench.user + bench.system) / 1000;
      acc.dbCpuMs = dbBefore !== undefined && dbAfter !== undefined && acc.dbCpuMs !== undefined ? acc.dbCpuMs + (dbAfter - dbBefore) : undefined;
      acc.run.samples.push(...done.samples);
      acc.run.attempted += done.attempted;
      acc.run.wallMs += done.wallMs;
      acc.run.statuses5xx += done.statuses5xx;
      for (const [m, c] of done.failures) acc.run.failures.set(m, (acc.run.failures.get(m) ?? 0) + c);
      acc.cpuMs = cpuBefore !== undefined && cpuAfter !== undefined && acc.cpuMs !== undefined ? acc.cpuMs + (cpuAfter - cpuBefore) : undefined;
    }
  }
  return results;
}

/** Provider CPU (ms) per step of an OTP login, one list per step, for each started provider. */
type StepCpu = Map<string, number[]>;

/** Waits until the provider has used no CPU for STEP_QUIET_MS (work a step leaves behind is its own). */
async function cpuAfterQuiet(child: ChildHandle): Promise<number | undefined> {
  let last = child.cpuNs();
  for (let i = 0; i < 200 && last !== undefined; i++) {
    await new Promise((r) => setTimeout(r, STEP_QUIET_MS));
    const now = child.cpuNs();
    if (now === last) break;
    last = now;
  }
  return last;
}

/**
 * OTP logins one at a time, alternating between the providers, reading each provider's CPU after every
 * step once it has gone quiet: the step's own work, background work it caused (the OTP mail) included.
 */
async function measureStepCpu(started: Started[], sink: OtpSink, opts: Options): Promise<StepCpu[]> {
  const otpProof: LoginProof = { kind: 'otp', sink };
  const out = started.map((): StepCpu => new Map());
  process.stderr.write(`${started.map((x) => x.child.label).join(', ')}: ${opts.stepCpu} OTP logins each, one at a time, CPU per step… `);
  for (let i = 0; i < opts.stepCpu; i++) {
    for (const [k, side] of started.entries()) {
      checkInterrupted();
      side.child.phase = 'CPU per step';
      let before = await cpuAfterQuiet(side.child);
      const afterStep = async (step: string) => {
        const now = await cpuAfterQuiet(side.child);
        if (before !== undefined && now !== undefined) {
          const list = out[k]!.get(step) ?? [];
          list.push((now - before) / 1e6);
          out[k]!.set(step, list);
        }
        before = now;
      };
      await runLogin(side.rp, side.issuer, otpProof, side.users[opts.warmup + opts.logins + i]!, afterStep);
    }
  }
  process.stderr.write('done\n');
  return out;
}

/** Logins started in one equal-load run at most this many at once (a provider far behind fails them). */
const RATE_MAX_IN_FLIGHT = 100;

/**
 * Starts `count` operations `rate` per second, each at its time whether or not earlier ones have
 * finished (an open loop, like users arriving), and waits for all of them.
 */
async function runAtRate<T>(count: number, rate: number, op: (i: number) => Promise<T>): Promise<RunResult<T>> {
  const result: RunResult<T> = { samples: [], attempted: count, wallMs: 0, failures: new Map(), statuses5xx: 0 };
  const t0 = performance.now();
  const running = new Set<Promise<void>>();
  for (let i = 0; i < count && !interrupted; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    if (running.size >= RATE_MAX_IN_FLIGHT) await Promise.race(running);
    const p = op(i).then(
      (sample) => void result.samples.push(sample),
      (e: unknown) => recordFailure(result, e),
    );
    const tracked = p.finally(() => running.delete(tracked));
    running.add(tracked);
  }
  await Promise.all(running);
  result.wallMs = performance.now() - t0;
  return result;
}

/**
 * OTP logins started at the same fixed rate for every provider, in alternating rounds: CPU per login
 * under equal load. The throughput runs load each provider as far as it goes, which on a shared
 * 2-core machine also measures how the provider copes with having no core to spare.
 */
async function measureAtRate(started: Started[], sink: OtpSink, opts: Options): Promise<Array<Measured<LoginSample>>> {
  const otpProof: LoginProof = { kind: 'otp', sink };
  const round = started.length > 1 ? OTP_ROUND : opts.rateLogins;
  process.stderr.write(`${started.map((x) => x.child.label).join(', ')}: ${opts.rateLogins} OTP logins each started at ${opts.rate}/s… `);
  const plan = { total: opts.rateLogins, round, first: opts.warmup + opts.logins + opts.stepCpu, phase: 'equal-load logins' };
  const results = await alternatingRounds(started, plan, (side, first, n) =>
    runAtRate(n, opts.rate, (i) => runLogin(side.rp, side.issuer, otpProof, side.users[first + i]!)),
  );
  process.stderr.write(`${results.map((x) => x.run.samples.length).join(' / ')} ok\n`);
  return results;
}

function printAtRate(opts: Options, names: string[], runs: Array<Measured<LoginSample>>): void {
  console.log('');
  console.log(`Equal load: ${opts.rateLogins} OTP logins per provider started at ${opts.rate}/s (each at its time, whether or not`);
  console.log(`  earlier ones have finished), in alternating rounds of ${OTP_ROUND}; CPU per login of each provider under the same load.`);
  const rows: string[][] = [];
  const row = (label: string, values: number[], fmt: (v: number) => string, withRatio = true) =>
    rows.push([label, ...values.map(fmt), ...(values.length === 2 ? [withRatio ? ratio(values[0]!, values[1]!) : ''] : [])]);
  rows.push(['logins ok / started', ...runs.map((m) => `${m.run.samples.length}/${m.run.attempted}`), ...(runs.length === 2 ? [''] : [])]);
  row('logins/s', runs.map((m) => perSecond(m.run)), (v) => v.toFixed(1));
  row('provider CPU per login (ms)', runs.map((m) => perLogin(m, m.cpuMs)), ms);
  row('PostgreSQL CPU per login (ms)', runs.map((m) => perLogin(m, m.dbCpuMs)), ms, false);
  row('bench CPU per login (ms)', runs.map((m) => perLogin(m, m.benchCpuMs)), ms, false);
  const figures = runs.map((m) => figuresOf(m.run));
  row('p50 latency excl. mail wait (ms)', figures.map((f) => percentile(f.exclMail, 50)), ms);
  row('p95 latency excl. mail wait (ms)', figures.map((f) => percentile(f.exclMail, 95)), ms);
  printTable(['', ...names, ...(names.length === 2 ? ['ours/bare'] : [])], rows);
  for (const [k, m] of runs.entries()) for (const [message, count] of m.run.failures) console.log(`  ${names[k]}: ${count}x ${message}`);
}

function printStepCpu(opts: Options, names: string[], steps: StepCpu[]): void {
  const stepNames = [...new Set(steps.flatMap((m) => [...m.keys()]))];
  const mean = (xs: number[] | undefined) => (xs?.length ? xs.reduce((a, x) => a + x, 0) / xs.length : Number.NaN);
  console.log('');
  console.log(`Provider CPU per step (ms, mean of ${opts.stepCpu} OTP logins one at a time, alternating; per-thread scheduler`);
  console.log(`  time read once the provider has been idle for ${STEP_QUIET_MS} ms after the step; the OTP mail's delivery is in`);
  console.log('  "wait for OTP mail"). One login at a time costs more per login than the loaded runs above.');
  const rows = stepNames.map((n) => {
    const v = steps.map((m) => mean(m.get(n)));
    return [`  ${n}`, ...v.map((x) => ms(x)), ...(v.length === 2 ? [ratio(v[0]!, v[1]!)] : [])];
  });
  const totals = steps.map((m) => [...m.values()].reduce((a, xs) => a + mean(xs), 0));
  rows.push(['  whole login', ...totals.map((x) => ms(x)), ...(totals.length === 2 ? [ratio(totals[0]!, totals[1]!)] : [])]);
  printTable(['CPU per step (ms)', ...names, ...(names.length === 2 ? ['ratio'] : [])], rows);
}

/** Everything after the OTP logins, for one provider: probes, password logins, grants; then it stops. */
/**
 * `latest`: the provider's most recent logins (the refresh tokens come from them: bare
 * oidc-provider's in-memory adapter keeps only its last 1,000 entries).
 */
async function finishTarget(started: Started, otp: Measured<LoginSample>, latest: LoginSample[], opts: Options): Promise<TargetReport> {
  const { target, child, issuer, rp, processes } = started;
  const counts = { warmup: opts.warmup, measured: opts.logins, concurrency: opts.concurrency };
  const peakRss = child.peakRssKb();

  let userIdStep: Record<string, number[]> | undefined;
  if (target.prepareUserIdProbe && opts.probes > 0) {
    child.phase = 'user-ID probe';
    const ids = await target.prepareUserIdProbe(opts.probes);
    process.stderr.write(`${target.name}: user-ID step, ${opts.probes} times each for ${Object.keys(ids).join(', ')}… `);
    userIdStep = await probeUserIdStep(child, rp, issuer, ids, opts.probes);
    checkInterrupted();
    process.stderr.write('done\n');
  }

  let password: Measured<LoginSample> | undefined;
  if (target.password && opts.passwordLogins > 0) {
    const pwUsers = await target.password.prepareAccounts(opts.warmup + opts.passwordLogins);
    const pwRp = await discoverRp(issuer, target.password.client.id, target.password.client.secret);
    const proof: LoginProof = { kind: 'password', password: PASSWORD };
    password = await measure(child, 'password logins', { ...counts, measured: opts.passwordLogins }, (i) => runLogin(pwRp, issuer, proof, pwUsers[i]!));
  }

  let refresh: Measured<number> | undefined;
  let clientCredentials: Measured<number> | undefined;
  if (opts.grants > 0) {
    // One refresh token per worker, from the latest OTP logins; a rotated token replaces its worker's.
    const tokens = latest.flatMap((x) => (x.refreshToken ? [x.refreshToken] : [])).slice(-opts.concurrency);
    if (tokens.length) {
      refresh = await measure(child, 'refresh_token grants', { warmup: opts.warmup, measured: opts.grants, concurrency: tokens.length }, (_i, w) =>
        timed(async () => {
          tokens[w] = await refreshGrant(rp, tokens[w]!);
        }),
      );
    } else {
      process.stderr.write(`${target.name}: no refresh tokens from the OTP logins, refresh_token grants skipped\n`);
    }
    const backoffice = await discoverRp(issuer, target.backoffice.id, target.backoffice.secret);
    clientCredentials = await measure(child, 'client_credentials grants', { warmup: opts.warmup, measured: opts.grants, concurrency: opts.concurrency }, () =>
      timed(() => clientCredentialsGrant(backoffice, MANAGEMENT_SCOPE)),
    );
  }

  await stopProvider(child);
  return {
    name: target.name,
    otp,
    peakRss,
    processes,
    lines: child.lines,
    ...(userIdStep ? { userIdStep } : {}),
    ...(password ? { password } : {}),
    ...(refresh ? { refresh } : {}),
    ...(clientCredentials ? { clientCredentials } : {}),
  };
}

/**
 * Times the user-ID step for each kind of ID, interleaved (a slower moment of the machine hits every
 * kind alike). Each probe starts once the provider is quiet: a live ID's code is mailed after the
 * response, and that work would otherwise land on the next probe (another kind of ID) and be timed as its.
 */
async function probeUserIdStep(child: ChildHandle, rp: oidc.Configuration, issuer: string, ids: Record<string, string[]>, perKind: number): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = Object.fromEntries(Object.keys(ids).map((k) => [k, [] as number[]]));
  for (let i = 0; i < perKind && !interrupted; i++)
    for (const [kind, list] of Object.entries(ids)) {
      await cpuAfterQuiet(child);
      out[kind]!.push(await timeUserIdStep(rp, issuer, list[i]!));
    }
  for (const xs of Object.values(out)) xs.sort((p, q) => p - q);
  return out;
}

// ---- SQL statements per login (ours, through the counting proxy) ---------------------------------

interface SqlReport {
  logins: number;
  /** Statements per login, ascending. */
  perLogin: number[];
  /** Statements per step, one entry per login (0 when the step sent none). */
  perStep: Map<string, number[]>;
  /** The login whose total is the median, statement by statement. */
  medianLogin: StatementCounts | undefined;
  idle: { seconds: number; counts: StatementCounts };
  /** Statements per operation of other kinds, ascending. */
  operations: Array<{ name: string; counts: number[]; sample: StatementCounts | undefined }>;
  connections: { opened: number; opaque: number };
  failures: Map<string, number>;
  lines: ChildLine[];
}

/**
 * Statements of the mail queue alone (the outbox table), and the line they are counted on. A login
 * code's statement also adds its mail's row (a CTE): it belongs to its step.
 */
const MAIL_SQL = /^\s*(?:INSERT INTO|UPDATE|DELETE FROM|SELECT\b[^;]*?\bFROM)\s+(?:"?public"?\.)?"?mail_outbox\b/i;
const MAIL_STEP = '(mail outbox, in the background)';

/** Quiet: no statement for QUIET_MS, counted from the later of the last statement and the call. */
const QUIET_MS = 80;
/** Idle time after a step before the CPU-per-step measurement reads the provider's CPU. */
const STEP_QUIET_MS = 30;
const QUIET_MAX_MS = 2_000;

async function waitQuiet(counter: PgCounter): Promise<void> {
  const start = performance.now();
  for (;;) {
    const now = performance.now();
    const since = now - Math.max(counter.lastActivity(), start);
    if (since >= QUIET_MS || now - start >= QUIET_MAX_MS) return;
    await sleep(QUIET_MS - since + 1);
  }
}

/** Counts the statements of each operation, run one at a time, waiting for quiet before and after. */
async function countPerOperation(counter: PgCounter, n: number, op: (i: number, afterStep: AfterStep) => Promise<unknown>, failures: Map<string, number>) {
  const totals: Array<{ total: number; counts: StatementCounts; steps: Map<string, number> }> = [];
  for (let i = 0; i < n && !interrupted; i++) {
    await waitQuiet(counter);
    const start = counter.snapshot();
    let last = start;
    const steps = new Map<string, number>();
    // Mail goes out in the background while later steps run: its statements get a line of their own.
    const attribute = (step: string, now: StatementCounts) => {
      const diff = diffCounts(last, now);
      const mail = [...diff.bySql].reduce((n, [sql, c]) => n + (MAIL_SQL.test(sql) ? c : 0), 0);
      if (diff.total - mail > 0 || !steps.has(step)) steps.set(step, (steps.get(step) ?? 0) + diff.total - mail);
      if (mail > 0) steps.set(MAIL_STEP, (steps.get(MAIL_STEP) ?? 0) + mail);
      last = now;
    };
    const afterStep: AfterStep = async (step) => {
      await waitQuiet(counter);
      attribute(step, counter.snapshot());
    };
    try {
      await op(i, afterStep);
    } catch (e) {
      const message = (e as Error).message.replace(/\/interaction\/[\w-]+/g, '/interaction/<uid>');
      failures.set(message, (failures.get(message) ?? 0) + 1);
      continue;
    }
    await waitQuiet(counter);
    const end = counter.snapshot();
    if (end.total > last.total) attribute('(after the last step)', end);
    const counts = diffCounts(start, end);
    totals.push({ total: counts.total, counts, steps });
  }
  return totals;
}

async function measureSql(
  opts: Options,
  env: Record<string, string>,
  databaseUrl: string,
  sink: OtpSink,
  users: { otp: User[]; password: User[] },
  clients: { rp: Client; password: Client; backoffice: Client },
): Promise<SqlReport> {
  const real = new URL(databaseUrl);
  const counter = await startPgCounter({ host: real.hostname, port: Number(real.port || 5432) });
  onCleanup('SQL counting proxy', () => counter.close());
  const proxied = new URL(databaseUrl);
  proxied.hostname = counter.host;
  proxied.port = String(counter.port);
  const { child, issuer } = await startProvider('ours (SQL count)', 'src/main.ts', { ...env, DATABASE_URL: proxied.href });
  const rp = await discoverRp(issuer, clients.rp.id, clients.rp.secret);
  const otpProof: LoginProof = { kind: 'otp', sink };
  const failures = new Map<string, number>();

  // Warm-up: the pool's connections, the library's lazy set-up.
  child.phase = 'SQL warm-up';
  process.stderr.write(`ours (SQL count): 2 warm-up logins, then idle ${IDLE_SECONDS} s… `);
  for (let i = 0; i < 2; i++) await runLogin(rp, issuer, otpProof, users.otp[i]!);
  await waitQuiet(counter);
  const idleStart = counter.snapshot();
  await sleep(IDLE_SECONDS * 1000);
  const idle = { seconds: IDLE_SECONDS, counts: diffCounts(idleStart, counter.snapshot()) };
  process.stderr.write('done\n');
  checkInterrupted();

  child.phase = 'SQL count';
  process.stderr.write(`ours (SQL count): ${opts.sqlLogins} OTP logins one at a time… `);
  const logins = await countPerOperation(counter, opts.sqlLogins, (i, afterStep) => runLogin(rp, issuer, otpProof, users.otp[2 + i]!, afterStep), failures);
  process.stderr.write(`${logins.length} ok\n`);
  const perStep = new Map<string, number[]>();
  for (const [k, l] of logins.entries())
    for (const [step, n] of l.steps) {
      const list = perStep.get(step) ?? Array.from({ length: logins.length }, () => 0);
      list[k] = n;
      perStep.set(step, list);
    }
  const sortedLogins = [...logins].sort((p, q) => p.total - q.total);
  const medianLogin = sortedLogins[Math.ceil(sortedLogins.length / 2) - 1]?.counts;

  // The other operations, fewer of each: their counts hardly vary.
  const few = Math.min(opts.sqlLogins, 10);
  const operations: SqlReport['operations'] = [];
  const addOperation = (name: string, results: Awaited<ReturnType<typeof countPerOperation>>) => {
    const sorted = [...results].sort((p, q) => p.total - q.total);
    operations.push({ name, counts: sorted.map((r) => r.total), sample: sorted[Math.ceil(sorted.length / 2) - 1]?.counts });
  };
  if (users.password.length) {
    process.stderr.write(`ours (SQL count): ${few} password logins, refresh_token and client_credentials grants… `);
    const pwRp = await discoverRp(issuer, clients.password.id, clients.password.secret);
    const proof: LoginProof = { kind: 'password', password: PASSWORD };
    addOperation('password login', await countPerOperation(counter, Math.min(few, users.password.length), (i, afterStep) => runLogin(pwRp, issuer, proof, users.password[i]!, afterStep), failures));
  }
  let token = (await runLogin(rp, issuer, otpProof, users.otp[2 + opts.sqlLogins]!)).refreshToken;
  if (token) addOperation('refresh_token grant', await countPerOperation(counter, few, async () => (token = await refreshGrant(rp, token!)), failures));
  const backoffice = await discoverRp(issuer, clients.backoffice.id, clients.backoffice.secret);
  addOperation('client_credentials grant', await countPerOperation(counter, few, () => clientCredentialsGrant(backoffice, MANAGEMENT_SCOPE), failures));
  process.stderr.write('done\n');

  await stopProvider(child);
  const connections = counter.connections();
  await counter.close();
  return {
    logins: logins.length,
    perLogin: logins.map((l) => l.total).sort((p, q) => p - q),
    perStep,
    medianLogin,
    idle,
    operations,
    connections,
    failures,
    lines: child.lines,
  };
}

const IDLE_SECONDS = 3;

// ---- latency with a million accounts -------------------------------------------------------------

interface ScaleRun {
  accounts: number;
  figures: Figures;
  userIdStepP50: number;
  probe: number[];
  failures: Map<string, number>;
}

interface ScaleReport {
  small: ScaleRun;
  large: ScaleRun;
  seedSeconds: number;
  seeded: number;
  rounds: number;
  lines: ChildLine[];
}

const SMALL_ACCOUNTS = 1_000;
const LARGE_ACCOUNTS = 1_000_000;
const SCALE_PROBES = 100;

async function withPg<T>(databaseUrl: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: databaseUrl });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function countAccounts(databaseUrl: string): Promise<number> {
  return withPg(databaseUrl, async (c) => Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM accounts')).rows[0]!.n));
}

/**
 * Inserts `count` active OTP accounts with one device each, user IDs `<prefix><first>`…, in one
 * statement (INSERT … SELECT generate_series).
 */
async function insertAccounts(c: pg.Client, tenantId: string, prefix: string, first: number, count: number): Promise<void> {
  if (count <= 0) return;
  await c.query(
    `WITH a AS (
       INSERT INTO accounts (id, tenant_id, user_id, status, login_method, activated_at, updated_at)
       SELECT gen_random_uuid(), $1, $2 || g, 'active', 'otp', now(), now() FROM generate_series($3::int, $4::int) g
       RETURNING id, user_id)
     INSERT INTO devices (id, account_id, number, email, kind, verified_at)
     SELECT gen_random_uuid(), id, 1, user_id || $5, 'pc', now() FROM a`,
    [tenantId, prefix, first, first + count - 1, `@${MAIL_DOMAIN}`],
  );
}

/**
 * OTP latency with 1,000 accounts against 1,000,000: two provider instances on two new databases of
 * the bench's server, one filled up to 1,000 accounts, the other up to 1,000,000 (filler accounts in
 * another tenant). Logins run in alternating rounds (small, large, large, small, …) and the user-ID
 * probes alternate one by one, so a busier moment of the shared machine weighs on both sizes alike.
 */
async function measureScale(
  opts: Options,
  env: Record<string, string>,
  databaseUrl: string,
  sink: OtpSink,
  client: Client,
  tenantId: string,
  fillerTenant: string,
  userPrefix: string,
): Promise<ScaleReport> {
  // Two fresh databases, so the number of accounts is all that differs between them.
  const smallDb = await createBenchDatabase(databaseUrl);
  onCleanup('drop the 1,000-account database', () => smallDb.drop());
  const largeDb = await createBenchDatabase(databaseUrl);
  onCleanup('drop the million-account database', () => largeDb.drop());
  const per = opts.warmup + opts.scaleLogins + SCALE_PROBES;
  const sizes = [
    { name: 'small', url: smallDb.url, target: SMALL_ACCOUNTS, prefix: `${userPrefix}s1-` },
    { name: 'large', url: largeDb.url, target: LARGE_ACCOUNTS, prefix: `${userPrefix}s2-` },
  ] as const;
  // Each instance applies the migrations to its new database as it starts.
  const started: Array<{ child: ChildHandle; issuer: string }> = [];
  for (const size of sizes) started.push(await startProvider(`ours (${size.name} database)`, 'src/main.ts', { ...env, DATABASE_URL: size.url }));
  let seeded = 0;
  let seedSeconds = 0;
  for (const size of sizes) {
    const t0 = performance.now();
    await withPg(size.url, async (c) => {
      await insertAccounts(c, tenantId, size.prefix, 0, per);
      const have = Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM accounts')).rows[0]!.n);
      if (size.name === 'large') process.stderr.write(`seeding ${(size.target - have).toLocaleString('en-US')} accounts with devices (one INSERT … SELECT generate_series, then ANALYZE)… `);
      await insertAccounts(c, fillerTenant, `f-${size.name}-`, 1, size.target - have);
      await c.query('ANALYZE');
      if (size.name === 'large') {
        seeded = size.target - have;
        seedSeconds = (performance.now() - t0) / 1000;
        process.stderr.write(`${seedSeconds.toFixed(1)} s\n`);
      }
    });
    checkInterrupted();
  }
  const sides = await Promise.all(
    sizes.map(async (size, k) => {
      const { child, issuer } = started[k]!;
      const users = Array.from({ length: per }, (_, i) => ({ userId: `${size.prefix}${i}`, email: `${size.prefix}${i}@${MAIL_DOMAIN}` }));
      return { size, child, issuer, users, rp: await discoverRp(issuer, client.id, client.secret), accounts: await countAccounts(size.url) };
    }),
  );
  const otpProof: LoginProof = { kind: 'otp', sink };
  if (opts.warmup > 0) {
    process.stderr.write(`database size: ${opts.warmup} warm-up logins per size… `);
    for (const side of sides) {
      side.child.phase = 'warm-up';
      await runMany(opts.warmup, opts.concurrency, (i) => runLogin(side.rp, side.issuer, otpProof, side.users[i]!));
      checkInterrupted();
    }
    process.stderr.write('done\n');
  }

  const round = Math.max(opts.concurrency, 10);
  const rounds = Math.ceil(opts.scaleLogins / round);
  const results = sides.map(() => ({ samples: [] as LoginSample[], wallMs: 0, failures: new Map<string, number>(), attempted: 0, statuses5xx: 0 }));
  process.stderr.write(`database size: ${opts.scaleLogins} OTP logins per size in ${rounds} alternating rounds of ${round}… `);
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? [0, 1] : [1, 0];
    for (const k of order) {
      const side = sides[k]!;
      const first = opts.warmup + r * round;
      const n = Math.min(round, opts.scaleLogins - r * round);
      side.child.phase = 'OTP logins';
      const run = await runMany(n, opts.concurrency, (i) => runLogin(side.rp, side.issuer, otpProof, side.users[first + i]!));
      const acc = results[k]!;
      acc.samples.push(...run.samples);
      acc.wallMs += run.wallMs;
      acc.attempted += run.attempted;
      acc.statuses5xx += run.statuses5xx;
      for (const [m, c] of run.failures) acc.failures.set(m, (acc.failures.get(m) ?? 0) + c);
      checkInterrupted();
    }
  }
  process.stderr.write('done\n');
  process.stderr.write(`database size: user-ID step alone, ${SCALE_PROBES} per size, alternating… `);
  const probes: number[][] = [[], []];
  for (let i = 0; i < SCALE_PROBES && !interrupted; i++)
    for (const k of i % 2 === 0 ? [0, 1] : [1, 0]) {
      const side = sides[k]!;
      // Once both are quiet: the code mail of the probe before goes out after its response.
      for (const other of sides) await cpuAfterQuiet(other.child);
      probes[k]!.push(await timeUserIdStep(side.rp, side.issuer, side.users[opts.warmup + opts.scaleLogins + i]!.userId));
    }
  checkInterrupted();
  process.stderr.write('done\n');
  for (const side of sides) await stopProvider(side.child);

  const [small, big] = sides.map((side, k): ScaleRun => {
    const run = results[k]!;
    return {
      accounts: side.accounts,
      figures: figuresOf(run),
      userIdStepP50: percentile(run.samples.map((x) => x.steps['submit user ID'] ?? 0).sort((p, q) => p - q), 50),
      probe: probes[k]!.sort((p, q) => p - q),
      failures: run.failures,
    };
  });
  return { small: small!, large: big!, seedSeconds, seeded, rounds, lines: sides.flatMap((s) => s.child.lines) };
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

function figuresOf(run: RunResult<LoginSample>): Figures {
  const asc = (xs: number[]) => xs.sort((a, b) => a - b);
  return {
    throughput: run.samples.length / (run.wallMs / 1000),
    total: asc(run.samples.map((s) => s.totalMs)),
    exclMail: asc(run.samples.map((s) => s.totalMs - s.mailWaitMs)),
    mailWait: asc(run.samples.map((s) => s.mailWaitMs)),
    mailDelivery: asc(run.samples.map((s) => s.mailDeliveryMs)),
  };
}

const ms = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : '-');
const perSecond = (run: RunResult<unknown>) => run.samples.length / (run.wallMs / 1000);
/** A total (CPU ms) divided by the logins (or grants) of its run; NaN when unknown or none succeeded. */
const perLogin = (m: Measured<unknown>, total: number | undefined) => (total !== undefined && m.run.samples.length ? total / m.run.samples.length : Number.NaN);
const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');

/** Left-aligned first column, right-aligned others, three spaces apart. */
function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((_, i) => Math.max(...[header, ...rows].map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) =>
    header
      .map((_, i) => (i === 0 ? (r[i] ?? '').padEnd(widths[i]!) : (r[i] ?? '').padStart(widths[i]!)))
      .join('   ')
      .trimEnd();
  console.log(line(header));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const r of rows) console.log(line(r));
}

const ratio = (x: number, y: number) => (Number.isFinite(x) && Number.isFinite(y) && y > 0 ? `${(x / y).toFixed(2)}x` : '-');

function printComparison(opts: Options, reports: TargetReport[], database: string): void {
  const both = reports.length === 2;
  const rows: string[][] = [];
  /** One row: a value per provider, and ours/bare when both ran. */
  const row = (label: string, values: number[], fmt: (v: number) => string) => rows.push([label, ...values.map(fmt), ...(both ? [ratio(values[0]!, values[1]!)] : [])]);
  const heading = (label: string) => rows.push([label]);
  const figures = reports.map((r) => figuresOf(r.otp.run));

  rows.push(['OTP logins ok / measured', ...reports.map((r) => `${r.otp.run.samples.length}/${r.otp.run.attempted}`)]);
  row('throughput (logins/s)', figures.map((f) => f.throughput), (v) => v.toFixed(1));
  for (const [label, key] of [
    ['latency (ms, mail included)', 'total'],
    ['latency excl. mail wait (ms)', 'exclMail'],
  ] as const) {
    heading(label);
    for (const p of [50, 95, 99]) row(`  p${p}`, figures.map((f) => percentile(f[key], p)), ms);
    row('  max', figures.map((f) => f[key][f[key].length - 1] ?? Number.NaN), ms);
  }
  heading('mail wait on OTP page (ms)');
  for (const p of [50, 95]) row(`  p${p}`, figures.map((f) => percentile(f.mailWait, p)), ms);
  heading('mail delivery (ms)');
  for (const p of [50, 95]) row(`  p${p}`, figures.map((f) => percentile(f.mailDelivery, p)), ms);
  const rssOf = (r: TargetReport) => (r.peakRss ? r.peakRss.kb : Number.NaN);
  row('peak RSS, VmHWM (MiB)', reports.map(rssOf), (v) => (Number.isFinite(v) ? (v / 1024).toFixed(0) : 'n/a'));
  rows.push(['  node processes summed', ...reports.map((r) => String(r.peakRss?.pids.length ?? '-'))]);
  row('provider CPU per login (ms)', reports.map((r) => perLogin(r.otp, r.otp.cpuMs)), ms);
  const busy = (m: Measured<unknown>) => (m.cpuMs !== undefined ? (100 * m.cpuMs) / m.run.wallMs : Number.NaN);
  row('provider CPU busy (% of 1 core)', reports.map((r) => busy(r.otp)), (v) => (Number.isFinite(v) ? v.toFixed(0) : '-'));
  rows.push(['PostgreSQL CPU per login (ms)', ...reports.map((r) => perLogin(r.otp, r.otp.dbCpuMs)).map((v) => (Number.isFinite(v) ? v.toFixed(1) : 'n/a'))]);
  row('bench client + sink CPU per login (ms)', reports.map((r) => perLogin(r.otp, r.otp.benchCpuMs)), ms);
  rows.push(['HTTP 5xx during run', ...reports.map((r) => String(r.otp.run.statuses5xx))]);
  rows.push(['warn/error log lines in run', ...reports.map((r) => String(r.lines.filter((l) => l.phase === 'OTP logins').length))]);

  const stepNames = [...new Set(reports.flatMap((r) => r.otp.run.samples.flatMap((x) => Object.keys(x.steps))))];
  const stepP50 = (r: TargetReport, name: string) => percentile(r.otp.run.samples.map((x) => x.steps[name] ?? 0).sort((p, q) => p - q), 50);
  heading('p50 per step (ms)');
  for (const n of stepNames) row(`  ${n}`, reports.map((r) => stepP50(r, n)), ms);

  for (const [label, key] of [
    ['refresh_token grants', 'refresh'],
    ['client_credentials grants', 'clientCredentials'],
  ] as const) {
    const ms_ = reports.map((r) => r[key]);
    if (ms_.every((m) => m === undefined)) continue;
    heading(label);
    rows.push(['  ok / measured', ...ms_.map((m) => (m ? `${m.run.samples.length}/${m.run.attempted}` : '-'))]);
    row('  grants/s', ms_.map((m) => (m ? perSecond(m.run) : Number.NaN)), (v) => (Number.isFinite(v) ? v.toFixed(0) : '-'));
    const sorted = ms_.map((m) => (m ? [...m.run.samples].sort((p, q) => p - q) : []));
    row('  p50 (ms)', sorted.map((xs) => percentile(xs, 50)), ms);
    row('  p95 (ms)', sorted.map((xs) => percentile(xs, 95)), ms);
    row('  provider CPU per grant (ms)', ms_.map((m) => (m ? perLogin(m, m.cpuMs) : Number.NaN)), ms);
  }

  const ours = reports.find((r) => r.name === 'ours');
  console.log('');
  console.log(`Login benchmark: ${opts.logins} OTP logins per provider, ${opts.concurrency} concurrent workers, after ${opts.warmup} warm-up logins (not counted).`);
  if (ours) {
    const wc = opts.webConcurrency ? `WEB_CONCURRENCY=${opts.webConcurrency} (node processes seen: ${ours.processes})` : 'WEB_CONCURRENCY not set';
    console.log(`  ours = ${providerCommand}, NODE_ENV=production, PostgreSQL (${database}), in-process mail queue, no Redis, ${wc}`);
  }
  if (reports.some((r) => r.name === 'bare')) {
    console.log('  bare = bench/bare-provider.ts: oidc-provider with its in-memory adapter, minimal user-ID + OTP interaction');
    if (reports.length > 1 && opts.logins > Math.max(opts.concurrency, OTP_ROUND))
      console.log(`  The providers' OTP logins alternate in rounds of ${Math.max(opts.concurrency, OTP_ROUND)} (one provider at a time); CPU is summed over each one's rounds.`);
  }
  console.log(`  Node ${process.version}, ${availableParallelism()} CPUs shared by the bench client, the SMTP sink and the provider.`);
  console.log('  One login = authorize (PKCE) → user-ID page → submit → OTP page → wait for mail → submit OTP → redirects → code grant.');
  console.log('  Latency includes mail delivery (both providers send over SMTP to a sink in the bench process, over');
  console.log('  pooled connections, up to 5 each). "excl. mail wait" subtracts the time the user sat on the loaded OTP');
  console.log('  page waiting for the mail; "mail delivery" = user-ID response → message parsed at the sink (a new');
  console.log('  connection also waits for the smtp-server package\'s 100 ms pre-greeting delay, the same for both).');
  console.log('  RSS and CPU: every node process running the provider (with cluster workers: their sum; VmHWM summed');
  console.log('  is each process\'s own peak, an upper bound of the peak together): RSS up to the end of the OTP run, CPU during it.');
  if (opts.grants > 0) {
    console.log(`  Grants: ${opts.grants} of each kind after ${opts.warmup} warm-up; refresh_token with one token per worker (from the`);
    console.log(`  OTP logins, confidential client), client_credentials for scope ${MANAGEMENT_SCOPE} with ${opts.concurrency} workers.`);
  }
  console.log('');
  printTable(['', ...reports.map((r) => r.name), ...(both ? ['ours/bare'] : [])], rows);
}

function printPassword(opts: Options, ours: TargetReport): void {
  const m = ours.password;
  if (!m) return;
  const f = figuresOf(m.run);
  const cpu = m.cpuMs !== undefined && m.run.samples.length ? m.cpuMs / m.run.samples.length : Number.NaN;
  console.log('');
  console.log(`Password logins (ours): ${opts.passwordLogins} with ${opts.concurrency} workers after ${opts.warmup} warm-up; tenant whose contract allows`);
  console.log('  the password method, accounts with loginMethod password (hash from hashSecret, whatever src/credentials/hashing.ts uses).');
  console.log('  One login = authorize → user-ID page → submit → password page → submit password → redirects → code grant.');
  console.log(`  ok / measured   ${m.run.samples.length}/${m.run.attempted}`);
  console.log(`  logins/s        ${f.throughput.toFixed(1)}   (target ≥ ${TARGETS.passwordLoginsPerSecond}: ${verdict(f.throughput >= TARGETS.passwordLoginsPerSecond)})`);
  console.log(`  latency (ms)    p50 ${ms(percentile(f.total, 50))}   p95 ${ms(percentile(f.total, 95))}   p99 ${ms(percentile(f.total, 99))}`);
  const steps = [...new Set(m.run.samples.flatMap((x) => Object.keys(x.steps)))];
  console.log(`  p50 per step    ${steps.map((n) => `${n} ${ms(percentile(m.run.samples.map((x) => x.steps[n] ?? 0).sort((p, q) => p - q), 50))}`).join(', ')}`);
  console.log(`  provider CPU    ${ms(cpu)} ms per login; HTTP 5xx: ${m.run.statuses5xx}`);
}

function printSql(opts: Options, sql: SqlReport): void {
  const median = (xs: number[]) => percentile([...xs].sort((p, q) => p - q), 50);
  const perLogin = median(sql.perLogin);
  const idleRate = sql.idle.counts.total / sql.idle.seconds;
  console.log('');
  console.log(`SQL statements (ours): a separate provider instance whose DATABASE_URL goes through a counting proxy`);
  console.log(`  (bench/lib/pg-counter.ts; the measured runs above did not go through it). ${sql.logins} OTP logins one at a time;`);
  console.log(`  a statement = one simple Query or one Execute; every statement of the provider process counts (mail outbox`);
  console.log(`  included). Each step is followed by ${QUIET_MS} ms without statements, so work a step leaves behind is its own;`);
  console.log('  the mail outbox\'s statements (enqueue, claim, mark sent, and its periodic poll) are on a line of their own.');
  console.log(`  ${sql.connections.opened} connections through the proxy${sql.connections.opaque ? `, ${sql.connections.opaque} encrypted (not counted)` : ''}.`);
  console.log('');
  printTable(
    ['statements', 'median', 'min', 'max'],
    [
      ['per complete OTP login', String(perLogin), String(sql.perLogin[0] ?? '-'), String(sql.perLogin.at(-1) ?? '-')],
      ...[...sql.perStep]
        // Steps in login order; the bracketed lines (background, after the last step) last, and only if they saw any.
        .filter(([step, xs]) => !step.startsWith('(') || xs.some((x) => x > 0))
        .sort(([p], [q]) => Number(p.startsWith('(')) - Number(q.startsWith('(')))
        .map(([step, xs]) => [`  ${step}`, String(median(xs)), String(Math.min(...xs)), String(Math.max(...xs))]),
      ...sql.operations.map((o) => [`per ${o.name}`, String(median(o.counts)), String(o.counts[0] ?? '-'), String(o.counts.at(-1) ?? '-')]),
    ],
  );
  console.log(`  target ≤ ${TARGETS.statementsPerLogin} per complete login: ${verdict(perLogin <= TARGETS.statementsPerLogin)}`);
  console.log(
    `  background while idle: ${sql.idle.counts.total} statements in ${sql.idle.seconds} s (${idleRate.toFixed(1)}/s)` +
      (sql.idle.counts.total ? `, so about ${idleRate.toFixed(1)} per second of login time is not the login's:` : ''),
  );
  for (const [text, n] of [...sql.idle.counts.bySql].sort((p, q) => q[1] - p[1])) console.log(`    ${String(n).padStart(4)}x ${oneLine(text)}`);
  if (sql.failures.size) {
    console.log('  failures during counting:');
    for (const [m, n] of sql.failures) console.log(`    ${n}x ${m}`);
  }
  if (opts.sqlLog) {
    const show = (title: string, counts: StatementCounts | undefined) => {
      if (!counts) return;
      console.log('');
      console.log(`${title}: ${counts.total} statements, ${counts.bySql.size} distinct (count, first 100 characters):`);
      for (const [text, n] of [...counts.bySql].sort((p, q) => q[1] - p[1])) console.log(`  ${String(n).padStart(4)}x ${oneLine(text)}`);
    };
    show('SQL of one OTP login (the median one)', sql.medianLogin);
    for (const o of sql.operations) show(`SQL of one ${o.name}`, o.sample);
  }
}

const oneLine = (sql: string) => {
  const flat = sql.replace(/\s+/g, ' ').trim();
  return flat.length > 100 ? `${flat.slice(0, 100)}…` : flat;
};

function printScale(opts: Options, scale: ScaleReport): void {
  const runs = [scale.small, scale.large];
  const round = Math.max(opts.concurrency, 10);
  console.log('');
  console.log(`Database size (ours): two provider instances on two new databases, one filled up to ${SMALL_ACCOUNTS.toLocaleString('en-US')} accounts, the other`);
  console.log(`  up to ${LARGE_ACCOUNTS.toLocaleString('en-US')} (filler accounts of another tenant, one device each: one INSERT …`);
  console.log(`  SELECT generate_series, then ANALYZE; ${scale.seeded.toLocaleString('en-US')} accounts took ${scale.seedSeconds.toFixed(1)} s). ${opts.scaleLogins} OTP logins per size with`);
  console.log(`  ${opts.concurrency} workers after ${opts.warmup} warm-up, in ${scale.rounds} alternating rounds of ${round}; then the user-ID step alone ${SCALE_PROBES} times per`);
  console.log('  size, one at a time, alternating, each once both providers are quiet.');
  console.log('');
  const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && a > 0 ? `${(b / a).toFixed(2)}x` : '-');
  const line = (label: string, f: (r: ScaleRun) => number, fmt: (v: number) => string) => [label, ...runs.map((r) => fmt(f(r))), ratio(f(scale.small), f(scale.large))];
  printTable(
    ['', ...runs.map((r) => `${r.accounts.toLocaleString('en-US')} accounts`), 'large/small'],
    [
      line('logins/s', (r) => r.figures.throughput, (v) => v.toFixed(1)),
      line('p50 latency excl. mail wait (ms)', (r) => percentile(r.figures.exclMail, 50), ms),
      line('p95 latency excl. mail wait (ms)', (r) => percentile(r.figures.exclMail, 95), ms),
      line('p50 submit user ID in the logins (ms)', (r) => r.userIdStepP50, ms),
      line('p50 user-ID step alone (ms)', (r) => percentile(r.probe, 50), ms),
    ],
  );
  const r = percentile(scale.large.figures.exclMail, 50) / percentile(scale.small.figures.exclMail, 50);
  const u = percentile(scale.large.probe, 50) / percentile(scale.small.probe, 50);
  console.log(`  target: within 10 % (large/small ≤ ${TARGETS.millionRatio}): login latency ${verdict(r <= TARGETS.millionRatio)}, user-ID step alone ${verdict(u <= TARGETS.millionRatio)}`);
  console.log('  (On a shared machine, figures under concurrency move by 10-20 % between runs; the user-ID step alone,');
  console.log('  one request at a time, is the steadier of the two. Repeat the run before trusting a verdict near 1.1.)');
  for (const run of runs)
    if (run.failures.size) {
      console.log(`  failed logins at ${run.accounts.toLocaleString('en-US')} accounts:`);
      for (const [m, n] of run.failures) console.log(`    ${n}x ${m}`);
    }
}

function printTail(reports: TargetReport[]): void {
  for (const r of reports) {
    if (r.userIdStep) {
      console.log('');
      console.log(`User-ID step alone (${r.name}; submit → response), ${r.userIdStep.live?.length ?? 0} per kind of ID, one at a time, interleaved, each once the provider is quiet:`);
      for (const [kind, xs] of Object.entries(r.userIdStep)) console.log(`  ${kind.padEnd(8)} p50 ${ms(percentile(xs, 50))} ms   p95 ${ms(percentile(xs, 95))} ms`);
    }
  }
  for (const r of reports) {
    for (const [label, m] of [
      ['OTP logins', r.otp],
      ['password logins', r.password],
      ['refresh_token grants', r.refresh],
      ['client_credentials grants', r.clientCredentials],
    ] as const) {
      if (!m?.run.failures.size) continue;
      console.log(`\n${r.name}: failed ${label}`);
      for (const [msg, n] of m.run.failures) console.log(`  ${n}x ${msg}`);
    }
    printLines(r.name, r.lines);
  }
}

function printLines(name: string, lines: ChildLine[]): void {
  const distinct = new Map<string, number>();
  for (const l of lines) {
    const key = `[${l.phase} ${l.stream}] ${l.text.length > 400 ? `${l.text.slice(0, 400)}…` : l.text}`;
    distinct.set(key, (distinct.get(key) ?? 0) + 1);
  }
  if (!distinct.size) return;
  console.log(`\n${name}: warnings and errors the provider wrote (${lines.length} lines, ${distinct.size} distinct)`);
  for (const [m, n] of [...distinct].slice(0, 15)) console.log(`  ${n}x ${m}`);
}

// ---- main ----------------------------------------------------------------------------------------

/** How our provider is started (printed in the report). */
let providerCommand = 'tsx src/main.ts';

/**
 * Builds dist/ and returns the command of `npm run start:prod` for spawnTsx (BENCH_PROVIDER_CMD):
 * production runs compiled JavaScript with its memory settings, and that is what is measured.
 */
function productionCommand(): string {
  process.stderr.write('ours: npm run build… ');
  execFileSync(process.execPath, ['scripts/build.mjs'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  process.stderr.write('done\n');
  const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
  const startProd = scripts['start:prod'];
  if (!startProd) throw new Error('package.json has no start:prod script');
  // `VAR=value node …` as a command line: env(1) sets the variables, as the shell does for npm.
  return `env ${startProd}`;
}

async function main(): Promise<void> {
  const opts = parseOptions();
  const runId = randomBytes(3).toString('hex');
  if (opts.ours && !opts.tsx && !process.env.BENCH_PROVIDER_CMD) process.env.BENCH_PROVIDER_CMD = productionCommand();
  providerCommand = process.env.BENCH_PROVIDER_CMD ?? 'tsx src/main.ts';

  const sink = await startOtpSink();
  onCleanup('SMTP sink', () => sink.close());

  let databaseUrl = opts.databaseUrl;
  let database = 'given database';
  if (opts.ours && !databaseUrl) {
    const created = await createBenchDatabase();
    onCleanup('drop database', () => created.drop());
    databaseUrl = created.url;
    database = `fresh database ${new URL(databaseUrl).pathname.slice(1)}`;
  }

  // Secrets for this run only, as production requires them explicitly.
  const { privateKey } = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(privateKey)), kid: `bench-${runId}`, use: 'sig', alg: 'RS256' }] });
  const cookieKeys = randomBytes(32).toString('base64url');
  const secret = () => randomBytes(24).toString('base64url');
  const clients = {
    rp: { id: 'bench-rp', secret: secret() },
    backoffice: { id: 'bench-backoffice', secret: secret() },
    password: { id: 'bench-pw-rp', secret: secret() },
  };
  const tenantId = `bench-${runId}`;
  const passwordTenantId = `bench-pw-${runId}`;
  // Filler accounts for the database-size comparison; no client needs this tenant.
  const fillerTenantId = `bench-fill-${runId}`;

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
      - { client_id: ${clients.rp.id}, client_secret: ${clients.rp.secret}, name: Benchmark site, redirect_uris: ['${REDIRECT_URI}'] }
      - { client_id: ${clients.backoffice.id}, client_secret: ${clients.backoffice.secret}, name: Benchmark back office, redirect_uris: ['${REDIRECT_URI}'], extra_grant_types: [client_credentials] }
  - id: ${passwordTenantId}
    name: Benchmark (password)
    contract: { login_methods: [password] }
    clients:
      - { client_id: ${clients.password.id}, client_secret: ${clients.password.secret}, name: Benchmark site (password), redirect_uris: ['${REDIRECT_URI}'] }
`,
  );

  const userFor = (prefix: string, i: number): User => {
    const userId = `b-${runId}-${prefix}-${i}`;
    return { userId, email: `${userId}@${MAIL_DOMAIN}` };
  };

  const ourEnv: Record<string, string> = {
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    DATABASE_URL: databaseUrl ?? '',
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
    ...(opts.webConcurrency ? { WEB_CONCURRENCY: opts.webConcurrency } : {}),
  };

  // One pool for the bench's own account set-up, opened once the provider has applied the migrations.
  let db: Database | undefined;
  const benchDb = async (): Promise<Database> => {
    if (db) return db;
    const opened = await openDatabase({ databaseUrl: databaseUrl!, dataDir: MEMORY_DATA_DIR });
    db = opened;
    onCleanup('bench database connection', async () => {
      // On a database we did not create, leave nothing of ours behind (devices, flows, events cascade).
      if (opts.databaseUrl) await opened.prisma.account.deleteMany({ where: { tenantId: { in: [tenantId, passwordTenantId] } } });
      await opened.close();
    });
    return opened;
  };
  const createAccounts = async (tenant: string, prefix: string, count: number, extra: { loginMethod?: string; status?: 'active' | 'pending_activation' } = {}) => {
    const accounts = new AccountRepository((await benchDb()).prisma);
    const users = Array.from({ length: count }, (_, i) => userFor(prefix, i));
    for (let i = 0; i < users.length; i += 20)
      await Promise.all(users.slice(i, i + 20).map((u) => accounts.create({ tenantId: tenant, userId: u.userId, ...extra, devices: [{ email: u.email }] })));
    return users;
  };
  let passwordHash: string | undefined;
  const createPasswordAccounts = async (prefix: string, count: number) => {
    const users = await createAccounts(passwordTenantId, prefix, count, { loginMethod: 'password' });
    // One hash for all: hashing is what logins measure, not set-up.
    passwordHash ??= await hashSecret(PASSWORD);
    await (await benchDb()).prisma.account.updateMany({ where: { tenantId: passwordTenantId, userId: { in: users.map((u) => u.userId) } }, data: { passwordHash } });
    return users;
  };

  // Both providers run side by side (one at a time): the OTP logins alternate between them.
  const started: Started[] = [];
  if (opts.ours) {
    started.push(
      await startTarget(
        {
          name: 'ours',
          script: 'src/main.ts',
          client: clients.rp,
          backoffice: clients.backoffice,
          env: ourEnv,
          prepareAccounts: (count) => createAccounts(tenantId, 'o', count),
          async prepareUserIdProbe(perKind) {
            const ids: Record<string, string[]> = {};
            ids.live = (await createAccounts(tenantId, 'probe-live', perKind)).map((u) => u.userId);
            ids.pending = (await createAccounts(tenantId, 'probe-pending', perKind, { status: 'pending_activation' })).map((u) => u.userId);
            ids.unknown = Array.from({ length: perKind }, (_, i) => userFor('probe-unknown', i).userId);
            return ids;
          },
          password: { client: clients.password, prepareAccounts: (count) => createPasswordAccounts('pw', count) },
        },
        opts,
      ),
    );
  }
  if (opts.bare) {
    started.push(
      await startTarget(
        {
          name: 'bare',
          script: 'bench/bare-provider.ts',
          client: clients.rp,
          backoffice: clients.backoffice,
          env: {
            NODE_ENV: 'production',
            SMTP_URL: sink.url,
            CLIENT_ID: clients.rp.id,
            CLIENT_SECRET: clients.rp.secret,
            BACKOFFICE_CLIENT_ID: clients.backoffice.id,
            BACKOFFICE_CLIENT_SECRET: clients.backoffice.secret,
            REDIRECT_URI,
            MAIL_DOMAIN,
            JWKS: jwks,
            COOKIE_KEYS: cookieKeys,
          },
          prepareAccounts: async (count) => Array.from({ length: count }, (_, i) => userFor('b', i)),
        },
        opts,
      ),
    );
  }
  const otpRuns = await measureOtpRounds(started, sink, opts);
  const stepCpu = opts.stepCpu > 0 ? await measureStepCpu(started, sink, opts) : undefined;
  const atRate = opts.rateLogins > 0 ? await measureAtRate(started, sink, opts) : undefined;
  const reports: TargetReport[] = [];
  for (const [k, side] of started.entries()) reports.push(await finishTarget(side, otpRuns[k]!, (atRate?.[k] ?? otpRuns[k]!).run.samples, opts));

  // The later sections run after the comparison has been measured: one failing leaves the others' figures.
  const sectionErrors: string[] = [];
  const section = async <T>(name: string, run: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await run();
    } catch (e) {
      if (e instanceof Interrupted || interrupted) throw e;
      sectionErrors.push(`${name} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      return undefined;
    }
  };
  let sql: SqlReport | undefined;
  let scale: ScaleReport | undefined;
  if (opts.ours && databaseUrl) {
    const url = databaseUrl;
    if (opts.sqlLogins > 0)
      sql = await section('SQL statements', async () => {
        const otpUsers = await createAccounts(tenantId, 'sql', opts.sqlLogins + 3);
        const pwUsers = opts.passwordLogins > 0 ? await createPasswordAccounts('sql-pw', Math.min(opts.sqlLogins, 10)) : [];
        return measureSql(opts, ourEnv, url, sink, { otp: otpUsers, password: pwUsers }, clients);
      });
    if (opts.million) scale = await section('Database size', () => measureScale(opts, ourEnv, url, sink, clients.rp, tenantId, fillerTenantId, `b-${runId}-`));
  }

  printComparison(opts, reports, database);
  const ours = reports.find((r) => r.name === 'ours');
  if (stepCpu) printStepCpu(opts, started.map((x) => x.target.name), stepCpu);
  if (atRate) printAtRate(opts, started.map((x) => x.target.name), atRate);
  if (ours) printPassword(opts, ours);
  if (sql) printSql(opts, sql);
  if (scale) printScale(opts, scale);
  printTail(reports);
  if (sql) printLines('ours (SQL count)', sql.lines);
  if (scale) printLines('ours (database size runs)', scale.lines);
  for (const e of sectionErrors) console.log(`\n${e}`);
  if (sectionErrors.length) process.exitCode = 1;
  const s = sink.stats();
  if (s.withoutOtp || s.parseErrors) console.log(`\nSMTP sink: ${s.messages} messages, ${s.withoutOtp} without an OTP, ${s.parseErrors} unparsable`);
}

let exitCode = 0;
try {
  await main();
  exitCode = Number(process.exitCode ?? 0);
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
