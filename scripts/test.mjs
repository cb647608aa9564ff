// `npm test`: type-check, then the whole jest suite (ESM needs --experimental-vm-modules).
// Tests use PostgreSQL at PGHOST/127.0.0.1:5432 and Redis at 127.0.0.1:6379 (see README).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const run = (args, env = {}) => spawnSync(process.execPath, args, { stdio: 'inherit', env: { ...process.env, ...env } }).status ?? 1;

let status = run([join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc'), '--noEmit']);
if (status !== 0) process.exit(status);
status = run(['--experimental-vm-modules', '--no-warnings', join(dirname(require.resolve('jest/package.json')), 'bin', 'jest.js'), ...process.argv.slice(2)], { NODE_ENV: 'test' });
process.exit(status);
