// Generates the Prisma client into src/persistence/generated. Prisma's CLI wants to download a
// native schema engine even for `generate`, which it does not use; pointing it at an existing file
// keeps the step offline.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let cli;
try {
  cli = require.resolve('prisma/build/index.js');
} catch {
  console.log('prisma CLI not installed (production install?); skipping generate');
  process.exit(0);
}
// --if-stale: skip when the generated client is newer than the schema (prestart/pretest).
const generated = 'src/persistence/generated/client.ts';
if (process.argv.includes('--if-stale') && existsSync(generated) && statSync(generated).mtimeMs >= statSync('prisma/schema.prisma').mtimeMs) process.exit(0);
const env = { ...process.env };
if (!env.PRISMA_SCHEMA_ENGINE_BINARY) env.PRISMA_SCHEMA_ENGINE_BINARY = existsSync('/bin/true') ? '/bin/true' : process.execPath;
env.PRISMA_HIDE_UPDATE_MESSAGE = '1';
const r = spawnSync(process.execPath, [cli, 'generate', '--schema', 'prisma/schema.prisma'], { stdio: 'inherit', env });
process.exit(r.status ?? 1);
