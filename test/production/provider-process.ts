// A provider started as operators start it (a child process with exactly the given environment), with
// its log lines kept so tests can wait for what it says.
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

export interface ProviderProcess {
  child: ChildProcess;
  pid: number;
  /** Every line written, stdout and stderr together. */
  lines: string[];
  /** The pino records written (lines that parse as JSON objects). */
  records(): Array<Record<string, unknown>>;
  /** Waits until a record matches (or the process exits, or the time is up). */
  waitForRecord(match: (r: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitCode(): number | null | undefined;
  /** SIGKILLs the process and its children (the end of a test, whatever happened). */
  kill(): Promise<void>;
}

/** Base environment of a production provider: the variables the README lists as required. */
export function productionSecrets(): Record<string, string> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: `k-${randomBytes(4).toString('hex')}`, alg: 'ES256', use: 'sig' };
  return {
    NODE_ENV: 'production',
    JWKS: JSON.stringify({ keys: [jwk] }),
    COOKIE_KEYS: randomBytes(32).toString('base64url'),
    OTP_HMAC_KEY: randomBytes(32).toString('base64url'),
  };
}

export function startProviderProcess(args: string[], env: Record<string, string>, cwd: string): ProviderProcess {
  const base: Record<string, string> = {};
  for (const k of ['PATH', 'HOME', 'TMPDIR', 'LANG', 'TZ']) if (process.env[k]) base[k] = process.env[k]!;
  const child = spawn(process.execPath, args, { cwd, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error('could not spawn the provider');
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  let code: number | null | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (c, signal) => {
      code = c ?? -1;
      for (const w of waiters) w();
      resolve({ code: c, signal });
    }),
  );
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      lines.push(line);
      for (const w of waiters) w();
    });
  }
  const records = () =>
    lines.flatMap((l) => {
      try {
        const r: unknown = JSON.parse(l);
        return r && typeof r === 'object' ? [r as Record<string, unknown>] : [];
      } catch {
        return [];
      }
    });
  const handle: ProviderProcess = {
    child,
    pid: child.pid,
    lines,
    records,
    exited,
    exitCode: () => code,
    async waitForRecord(match, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = records().find(match);
        if (found) return found;
        if (code !== undefined) throw new Error(`provider exited (${code}) before the expected log line:\n${lines.join('\n')}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`timed out waiting for a log line:\n${lines.join('\n')}`);
        await new Promise<void>((resolve) => {
          // Woken by the next line or the exit; the timer only bounds the wait.
          const t = setTimeout(done, left);
          function done() {
            clearTimeout(t);
            waiters.delete(done);
            resolve();
          }
          waiters.add(done);
        });
      }
    },
    async kill() {
      if (code !== undefined) return;
      for (const pid of [...descendantsOf(child.pid!), child.pid!]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await exited;
    },
  };
  return handle;
}

export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export function descendantsOf(pid: number): number[] {
  return childrenOf(pid).flatMap((c) => [c, ...descendantsOf(c)]);
}

/** Whether a process exists (and is not a zombie waiting for its parent). */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** CPU time (user + system, in clock ticks) a process has used. */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** Polls `fn` until it returns a value other than undefined, for at most `timeoutMs`. */
export async function eventually<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
