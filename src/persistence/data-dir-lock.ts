// The embedded database allows one process: a second one opening the same folder (the admin CLI
// beside a running provider) would write to files the first keeps in memory, and its changes vanish.
// An exclusive lock file beside the database says who holds the folder.
import { readFileSync, unlinkSync } from 'node:fs';
import { link, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';

export const LOCK_FILE = 'pglite.lock';

/** Who holds a data folder: enough to tell a live holder from a crashed one whose pid was reused. */
export interface LockHolder {
  pid: number;
  /** Kernel boot and the process's start (Linux /proc); absent elsewhere, where the pid alone counts. */
  bootId?: string;
  startTicks?: string;
  since: string;
}

export class DataDirLockedError extends Error {
  readonly code = 'data_dir_locked';
  constructor(
    readonly lockPath: string,
    readonly holder: LockHolder,
  ) {
    super(`the embedded database is in use by another process (pid ${holder.pid}, lock file ${lockPath})`);
    this.name = 'DataDirLockedError';
  }
}

/** The identity of a live process beyond its pid (Linux); empty where /proc is missing. */
export function processIdentity(pid: number): { bootId?: string; startTicks?: string } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start at state; starttime is field 22.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), startTicks: fields[19] };
  } catch {
    return {};
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Paths this process holds, so a second open inside one process is refused too. */
const held = new Set<string>();

function isLive(holder: LockHolder, lockPath: string): boolean {
  if (holder.pid === process.pid) return held.has(lockPath);
  if (!Number.isInteger(holder.pid) || holder.pid <= 0 || !pidAlive(holder.pid)) return false;
  if (!holder.startTicks) return true;
  // The pid lives, but is it the same process? After a crash and restart (a container's pid 1, say)
  // the number often belongs to another one.
  const now = processIdentity(holder.pid);
  return !now.startTicks || (now.bootId === holder.bootId && now.startTicks === holder.startTicks);
}

function parseHolder(text: string): LockHolder | undefined {
  try {
    const h = JSON.parse(text) as LockHolder;
    return typeof h.pid === 'number' ? h : undefined;
  } catch {
    return undefined;
  }
}

export interface DataDirLock {
  release(): Promise<void>;
}

/**
 * Takes `<dir>/pglite.lock` for this process, or throws DataDirLockedError at once when a live
 * process holds it. A lock left by a process that died is taken over. The file is created whole
 * (written aside, then hard-linked into place, which fails if it exists), so no reader sees half.
 */
export async function lockDataDir(dir: string): Promise<DataDirLock> {
  const lockPath = `${dir}/${LOCK_FILE}`;
  const me: LockHolder = { pid: process.pid, ...processIdentity(process.pid), since: new Date().toISOString() };
  const temp = `${lockPath}.${process.pid}.${randomBytes(4).toString('hex')}`;
  await writeFile(temp, `${JSON.stringify(me)}\n`, { mode: 0o600 });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(temp, lockPath);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 3) throw e;
      }
      const text = await readFile(lockPath, 'utf8').catch(() => '');
      const holder = parseHolder(text);
      // An unreadable or half-written file from an old crash counts as stale; a live holder stops us.
      if (holder && isLive(holder, lockPath)) throw new DataDirLockedError(lockPath, holder);
      // Move the stale file away; if what moved is not what was judged (another process took over
      // meanwhile), put it back and report that holder.
      const aside = `${lockPath}.stale.${randomBytes(4).toString('hex')}`;
      try {
        await rename(lockPath, aside);
      } catch {
        continue;
      }
      const moved = await readFile(aside, 'utf8').catch(() => '');
      if (moved !== text) {
        await link(aside, lockPath).catch(() => undefined);
        await unlink(aside).catch(() => undefined);
        const other = parseHolder(moved);
        if (other) throw new DataDirLockedError(lockPath, other);
        continue;
      }
      await unlink(aside).catch(() => undefined);
    }
  } finally {
    await unlink(temp).catch(() => undefined);
  }
  held.add(lockPath);
  // A process that exits without closing the database (process.exit) still leaves the folder free.
  const onExit = () => {
    try {
      if (held.delete(lockPath)) unlinkSync(lockPath);
    } catch {
      // already gone
    }
  };
  process.once('exit', onExit);
  return {
    async release() {
      process.off('exit', onExit);
      if (!held.delete(lockPath)) return;
      await unlink(lockPath).catch(() => undefined);
    },
  };
}
