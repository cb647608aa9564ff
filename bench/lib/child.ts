import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';

const tsxCli = createRequire(import.meta.url).resolve('tsx/cli');

/** One line the child wrote that deserves attention (pino level >= warn, or anything on stderr). */
export interface ChildLine {
  phase: string;
  stream: 'stdout' | 'stderr';
  text: string;
}

export interface ChildHandle {
  label: string;
  /** pid of the tsx launcher; the script itself runs in a node process below it. */
  pid: number;
  /** Set by the bench so lines can be told apart by when they were written. */
  phase: string;
  lines: ChildLine[];
  exitCode(): number | null | undefined;
  /**
   * Peak resident set (VmHWM, kB) of the processes running the script (the script's process and, in
   * cluster mode, its workers: every node process below tsx's launcher), summed; from /proc.
   */
  peakRssKb(): { pids: number[]; kb: number } | undefined;
  /** CPU time (user + system, ms) those processes have used so far, summed; from /proc. */
  cpuMs(): number | undefined;
  /**
   * The same in nanoseconds, from the scheduler's run time of every thread (/proc/<pid>/task/<tid>/schedstat):
   * precise enough for one request, where cpuMs() counts 10 ms clock ticks.
   */
  cpuNs(): number | undefined;
  /** Node processes running the script now (1, or 1 + workers with Node cluster). */
  scriptPids(): number[];
  /**
   * Waits until `processes` node processes run the script (or just one: no cluster) and none of them
   * is busy any more (start-up done), bounded by `timeoutMs`. Returns how many processes there are.
   */
  settle(processes: number, timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (released before the child binds it; fine on a quiet machine). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function descendantsOf(pid: number): number[] {
  const out: number[] = [];
  for (const c of childrenOf(pid)) out.push(c, ...descendantsOf(c));
  return out;
}

function vmHwmKb(pid: number): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

const nodeExe = realpathSync(process.execPath);
function isNode(pid: number): boolean {
  try {
    return readlinkSync(`/proc/${pid}/exe`) === nodeExe;
  } catch {
    return false;
  }
}

/** A process is done starting once it uses less than SETTLE_CPU_MS of CPU in SETTLE_WINDOW_MS. */
const SETTLE_WINDOW_MS = 500;
const SETTLE_CPU_MS = 30;

let clockTicks: number | undefined;
/** Milliseconds in `ticks` clock ticks (the unit of /proc/<pid>/stat's times). */
function ticksToMs(ticks: number): number {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  return (ticks * 1000) / clockTicks;
}
function cpuMsOf(pid: number): number | undefined {
  try {
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ticksToMs(Number(fields[11]) + Number(fields[12]));
  } catch {
    return undefined;
  }
}

function cpuNsOf(pid: number): number | undefined {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // the thread ended between the listing and the read
      }
    }
    return ns;
  } catch {
    return undefined;
  }
}

/**
 * CPU time (user + system, ms) of this host's PostgreSQL server so far: every process named
 * `postgres` (the postmaster, its backends and helpers) plus what its exited children used (the
 * postmaster's cutime + cstime). Undefined when no PostgreSQL runs on this host (a remote database).
 */
export function postgresCpuMs(): number | undefined {
  let ticks = 0;
  let found = false;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // ended between the listing and the read
    }
    const open = stat.indexOf('(');
    const close = stat.lastIndexOf(')');
    if (stat.slice(open + 1, close) !== 'postgres') continue;
    found = true;
    // After the command name: state is field 3, ppid 4, utime 14, stime 15, cutime 16, cstime 17.
    const f = stat.slice(close + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]);
    // The postmaster (its parent is not postgres) reaps the backends: their time lands in its cutime.
    if (!isPostgres(Number(f[1]))) ticks += Number(f[13]) + Number(f[14]);
  }
  return found ? ticksToMs(ticks) : undefined;
}

function isPostgres(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) === 'postgres';
  } catch {
    return false;
  }
}

function isWarnOrWorse(line: string): boolean {
  try {
    const level = (JSON.parse(line) as { level?: unknown }).level;
    return typeof level === 'number' ? level >= 40 : true;
  } catch {
    return line.trim() !== '';
  }
}

/** Starts `node <tsx cli> <script>` from `cwd` with exactly `env` (no inherited DATABASE_URL, REDIS_URL...). */
export function spawnTsx(label: string, script: string, env: Record<string, string>, cwd: string): ChildHandle {
  const base: Record<string, string> = {};
  for (const k of ['PATH', 'HOME', 'TMPDIR', 'LANG', 'TZ']) if (process.env[k]) base[k] = process.env[k]!;
  // BENCH_PROVIDER_CMD (e.g. `node dist/main.js` after `npm run build`) runs the provider instead of tsx src/main.ts.
  const providerCmd = script === 'src/main.ts' ? process.env.BENCH_PROVIDER_CMD?.trim().split(/\s+/) : undefined;
  const [command, ...args] = providerCmd?.length ? providerCmd : [process.execPath, tsxCli, script];
  const child: ChildProcess = spawn(command!, args, { cwd, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`${label}: could not spawn`);
  const pid = child.pid;
  let code: number | null | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (c, signal) => {
      code = c ?? (signal ? -1 : null);
      resolve();
    }),
  );
  // tsx's launcher (pid) starts one node process running the script, which may fork cluster workers;
  // helpers such as esbuild's service are not node and not counted.
  const scriptPids = () => {
    const pids = descendantsOf(pid).filter(isNode);
    return pids.length ? pids : [pid];
  };
  const sum = (values: Array<number | undefined>) => (values.some((v) => v === undefined) ? undefined : values.reduce<number>((a, v) => a + v!, 0));
  const handle: ChildHandle = {
    label,
    pid,
    phase: 'startup',
    lines: [],
    exitCode: () => code,
    peakRssKb() {
      const pids = scriptPids();
      const kb = sum(pids.map(vmHwmKb));
      return kb === undefined ? undefined : { pids, kb };
    },
    cpuMs: () => sum(scriptPids().map(cpuMsOf)),
    cpuNs: () => sum(scriptPids().map(cpuNsOf)),
    scriptPids,
    async settle(processes, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const pids = scriptPids();
        const before = pids.map(cpuMsOf);
        await new Promise((r) => setTimeout(r, SETTLE_WINDOW_MS));
        const same = scriptPids().join() === pids.join();
        const idle = pids.every((p, i) => (cpuMsOf(p) ?? Infinity) - (before[i] ?? 0) < SETTLE_CPU_MS);
        if ((same && idle && (pids.length >= processes || pids.length === 1)) || Date.now() > deadline || code !== undefined) return pids.length;
      }
    },
    async stop() {
      if (code !== undefined) return;
      const tree = descendantsOf(pid);
      handle.phase = 'shutdown';
      child.kill('SIGTERM'); // tsx relays it to the script, which shuts down cleanly
      const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 10_000).unref());
      if ((await Promise.race([exited, timeout])) === 'timeout') {
        for (const p of [...tree, pid]) {
          try {
            process.kill(p, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        await exited;
      }
    },
  };
  for (const [stream, source] of [['stdout', child.stdout], ['stderr', child.stderr]] as const) {
    if (!source) continue;
    createInterface({ input: source }).on('line', (text) => {
      if (isWarnOrWorse(text)) handle.lines.push({ phase: handle.phase, stream, text });
    });
  }
  return handle;
}

/** Polls `url` until it answers 200, failing early when the child exits. */
export async function waitForHttp(handle: ChildHandle, url: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (handle.exitCode() !== undefined) {
      const output = handle.lines.map((l) => l.text).join('\n');
      throw new Error(`${handle.label} exited with ${handle.exitCode()} before answering ${url}\n${output}`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${handle.label} did not answer ${url} within ${timeoutMs} ms (${last})`);
}
