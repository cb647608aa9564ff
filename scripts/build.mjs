// `npm run build`: compiles src/ (with the generated Prisma client) to JavaScript in dist/, and copies
// the files src/ reads next to its modules (locales, mail templates). views/, public/, config/ and
// prisma/migrations stay at the project root, where dist/ finds them as src/ does (one level up).
// `--out-dir DIR` builds elsewhere (the production test builds into a temporary project).
import { spawnSync } from 'node:child_process';
import { cpSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';

const require = createRequire(import.meta.url);
const at = process.argv.indexOf('--out-dir');
const outDir = resolve(at > 0 && process.argv[at + 1] ? process.argv[at + 1] : 'dist');

const run = (args) => {
  const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

run(['scripts/prisma-generate.mjs', '--if-stale']);
rmSync(outDir, { recursive: true, force: true });
run([join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc'), '-p', 'tsconfig.build.json', '--outDir', outDir]);
for (const dir of ['i18n/locales', 'mail/templates']) cpSync(join('src', dir), join(outDir, dir), { recursive: true });
