// A private redis-server for tests that stop Redis or need their own (never the shared one on 6379).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

/** A throwaway redis-server on `port`; resolves once it accepts connections. */
export async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const exited = once(child, 'exit').then(() => Promise.reject(new Error(`redis-server exited: ${out}`)));
  exited.catch(() => {});
  while (!out.includes('Ready to accept connections')) {
    const [chunk] = (await Promise.race([once(child.stdout!, 'data'), exited])) as [Buffer];
    out += chunk.toString('utf8');
  }
  child.stdout!.resume();
  return child;
}

/** Kills it (an outage, as a crash would be) and waits until it is gone. */
export async function stopRedis(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}
