import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const tsxCli = require.resolve('tsx/cli');

/**
 * Runs the admin CLI as an operator would, in a child process with `env` over this one's.
 * Asynchronous on purpose: the SMTP server the CLI mails to runs in this process.
 */
export function runAdminCli(env: Record<string, string>, args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  // The CLI's database is the one `env` names: a DATABASE_URL of this process must not leak in.
  const { DATABASE_URL: _fromParent, ...inherited } = process.env;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [tsxCli, 'src/cli/admin.ts', ...args], {
      env: { ...inherited, NODE_ENV: 'development', DEV_MAILBOX: 'false', REDIS_URL: '', LOG_LEVEL: 'silent', ...env },
      timeout: 60_000,
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolve({ code, out, err }));
  });
}
