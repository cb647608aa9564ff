// Removes from an installed production node_modules what no production dependency needs at run time:
// npm also installs the optional peers of some packages (the prisma CLI with its studio and dev server
// for @prisma/client, typescript for @prisma/client and i18next), about 190 MB the compiled provider
// never loads. Kept: everything reachable from package.json's "dependencies" through each package's
// own "dependencies" and "optionalDependencies". Used by the Dockerfile and test/production/build.test.ts.
// Usage: node scripts/prune-production.mjs [project dir]
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

const root = resolve(process.argv[2] ?? '.');
const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'));

/** The directory a package `name` required from `fromDir` resolves to (Node's node_modules walk). */
function locate(name, fromDir) {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dir === root || dirname(dir) === dir) return undefined;
  }
}

const keep = new Set();
const queue = Object.keys(readJson(join(root, 'package.json')).dependencies ?? {}).map((name) => ({ name, from: root }));
while (queue.length) {
  const { name, from } = queue.pop();
  const dir = locate(name, from);
  if (!dir || keep.has(dir)) continue;
  keep.add(dir);
  const pkg = readJson(join(dir, 'package.json'));
  for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) queue.push({ name: dep, from: dir });
}

/** Every installed package directory under `dir`'s node_modules (scoped and nested ones too). */
function installed(dir) {
  const nm = join(dir, 'node_modules');
  if (!existsSync(nm)) return [];
  const out = [];
  for (const entry of readdirSync(nm)) {
    if (entry.startsWith('.')) continue;
    const names = entry.startsWith('@') ? readdirSync(join(nm, entry)).map((n) => `${entry}/${n}`) : [entry];
    for (const name of names) {
      const pkgDir = join(nm, name);
      if (!existsSync(join(pkgDir, 'package.json'))) continue;
      out.push(pkgDir, ...installed(pkgDir));
    }
  }
  return out;
}

let removed = 0;
for (const dir of installed(root)) {
  if (keep.has(dir) || !existsSync(dir)) continue;
  // A kept package's own nested node_modules are checked on their own; this one is not needed.
  rmSync(dir, { recursive: true, force: true });
  removed++;
}
// Empty scope folders left behind.
const nm = join(root, 'node_modules');
for (const entry of readdirSync(nm)) if (entry.startsWith('@') && readdirSync(join(nm, entry)).length === 0) rmSync(join(nm, entry), { recursive: true });
console.log(`prune-production: kept ${keep.size} packages, removed ${removed}`);
