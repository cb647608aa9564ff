// What a provider on PostgreSQL without Redis, whose contracts use no client certificates, does not
// load: the embedded database (PGlite and its WASM), BullMQ, and the certificate libraries. Checked in a process of its own, which records every module it loads.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

const run = promisify(execFile);

// Module hooks run on their own thread: the resolve hook appends each URL to a file.
const HOOKS = `
import { appendFileSync } from 'node:fs';
let file;
export function initialize(data) { file = data; }
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  appendFileSync(file, result.url + '\\n');
  return result;
}`;

const SCRIPT = (loadedFile: string, dataDir: string) => `
import { register, createRequire } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(HOOKS)}), import.meta.url, { data: ${JSON.stringify(loadedFile)} });
const { loadConfig } = await import('./src/config/index.ts');
const { openDatabase } = await import('./src/persistence/database.ts');
const { createApp } = await import('./src/app.ts');
const { createLogger } = await import('./src/logger.ts');
const config = loadConfig({ NODE_ENV: 'test', DATABASE_URL: process.env.TEST_DATABASE_URL, DATA_DIR: ${JSON.stringify(dataDir)}, TENANTS_FILE: 'test/production/tenants.yaml', LOG_LEVEL: 'silent' });
const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
const app = await createApp({ config, db, logger: createLogger('silent') });
const required = Object.keys(createRequire(import.meta.url).cache);
await app.close();
await db.close();
console.log(JSON.stringify(required));
`;

let database: TestDatabase;
let dir: string;

beforeAll(async () => {
  database = await createTestDatabase('lazy');
  dir = mkdtempSync(join(tmpdir(), 'idp-lazy-'));
});

afterAll(async () => {
  await database?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('with DATABASE_URL, no REDIS_URL and no certificate method, neither PGlite, BullMQ nor the X.509 and PKCS#12 libraries are loaded', async () => {
  const loadedFile = join(dir, 'loaded.txt');
  const { DATABASE_URL: _parent, REDIS_URL: _redis, ...env } = process.env;
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', SCRIPT(loadedFile, join(dir, 'data'))], {
    env: { ...env, TEST_DATABASE_URL: database.url },
    maxBuffer: 16 << 20,
  });
  const esm = readFileSync(loadedFile, 'utf8').split('\n').filter(Boolean);
  const cjs = JSON.parse(stdout.trim().split('\n').at(-1)!) as string[];
  // The hooks saw the application's modules (the check below means something)...
  expect(esm.some((u) => u.endsWith('/src/app.ts'))).toBe(true);
  expect(esm.some((u) => u.includes('/node_modules/oidc-provider/'))).toBe(true);
  expect(cjs.some((p) => p.includes('/node_modules/ioredis/'))).toBe(true);
  // ...and none of these.
  expect([...esm, ...cjs].filter((u) => /\/node_modules\/(@electric-sql\/pglite|pglite-prisma-adapter|bullmq|@peculiar\/x509|node-forge|reflect-metadata)\//.test(u))).toEqual([]);
}, 120_000);
