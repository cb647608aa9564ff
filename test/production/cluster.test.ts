// WEB_CONCURRENCY: one primary forking HTTP workers on one port, replacing a dead one, stopping them all.
import { get } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { restartDelayMs } from '../../src/cluster.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { freePort } from '../support/relying-party.js';
import { childrenOf, cpuTicks, eventually, isAlive, productionSecrets, startProviderProcess, type ProviderProcess } from './provider-process.js';

const TSX = ['--import', 'tsx', 'src/main.ts'];

/** One request on a connection of its own (the primary hands connections to the workers in turn). */
function getOnNewConnection(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(url, { agent: false, timeout: 5_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    })
      .on('timeout', function (this: ReturnType<typeof get>) {
        this.destroy(new Error(`no answer from ${url} within 5 s`));
      })
      .on('error', reject);
  });
}

const listeningWorkers = (p: ProviderProcess) => [...new Set(p.records().filter((r) => r.msg === 'provider listening').map((r) => Number(r.pid)))];

test('restarts back off: 1 s, doubling with each further exit, at most 30 s', () => {
  expect([1, 2, 3, 4, 5, 6, 7, 20].map(restartDelayMs)).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
});

test('WEB_CONCURRENCY above 1 without DATABASE_URL is refused with one line', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'idp-cluster-'));
  const p = startProviderProcess(TSX, { ...productionSecrets(), WEB_CONCURRENCY: '2', PORT: String(await freePort()), DATA_DIR: dataDir, TENANTS_FILE: 'test/production/tenants.yaml' }, process.cwd());
  try {
    expect((await p.exited).code).toBe(1);
    expect(p.lines.filter((l) => !/Unsupported runtime/.test(l))).toEqual(['WEB_CONCURRENCY=2 needs DATABASE_URL (PostgreSQL): the embedded database allows one process.']);
  } finally {
    await p.kill();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

describe('WEB_CONCURRENCY=2 on PostgreSQL', () => {
  let database: TestDatabase;
  let provider: ProviderProcess;
  let base: string;
  let dataDir: string;

  beforeAll(async () => {
    database = await createTestDatabase('cluster');
    dataDir = mkdtempSync(join(tmpdir(), 'idp-cluster-'));
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    provider = startProviderProcess(
      TSX,
      { ...productionSecrets(), WEB_CONCURRENCY: '2', PORT: String(port), HOST: '127.0.0.1', DATABASE_URL: database.url, DATA_DIR: dataDir, TENANTS_FILE: 'test/production/tenants.yaml' },
      process.cwd(),
    );
    await eventually('two workers listening', () => (listeningWorkers(provider).length >= 2 ? true : undefined), 90_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${provider.lines.join('\n')}`);
    });
  }, 120_000);

  afterAll(async () => {
    await provider?.kill();
    await database?.drop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test('two worker processes of the primary answer; the migrations ran once', async () => {
    const workers = listeningWorkers(provider);
    expect(workers).toHaveLength(2);
    expect(childrenOf(provider.pid).sort()).toEqual([...workers].sort());
    expect(provider.records().filter((r) => r.msg === 'migration applied' && r.pid === workers[1]).length).toBe(0);
    expect(provider.records().filter((r) => r.msg === 'migration applied').length).toBeGreaterThan(0);

    const before = workers.map(cpuTicks);
    for (let i = 0; i < 200; i++) expect(await getOnNewConnection(`${base}/.well-known/openid-configuration`)).toBe(200);
    const used = workers.map((pid, i) => cpuTicks(pid) - before[i]!);
    // Connections go to the workers in turn: each has served its share.
    for (const ticks of used) expect(ticks).toBeGreaterThan(0);
  });

  test('a worker killed with SIGKILL: the other answers meanwhile, and a replacement is forked', async () => {
    const [victim, survivor] = listeningWorkers(provider) as [number, number];
    process.kill(victim, 'SIGKILL');
    // Connections handed to the worker as it died are lost with it; from the primary's notice on, none is.
    await provider.waitForRecord((r) => r.msg === 'worker died; forking a replacement' && r.worker === victim, 10_000);
    expect(isAlive(victim)).toBe(false);
    for (let i = 0; i < 10; i++) expect(await getOnNewConnection(`${base}/.well-known/openid-configuration`)).toBe(200);
    const replacement = await eventually('a replacement worker listening', () => listeningWorkers(provider).find((pid) => pid !== victim && pid !== survivor), 60_000);
    expect(childrenOf(provider.pid).sort()).toEqual([survivor, replacement].sort());
    expect(provider.records().find((r) => r.msg === 'worker died; forking a replacement' && r.worker === victim)).toMatchObject({ signal: 'SIGKILL', restartInMs: 1000 });
    expect(await getOnNewConnection(`${base}/health`)).toBe(200);
  }, 90_000);

  test('SIGTERM to the primary stops the whole tree within 10 s', async () => {
    const tree = [provider.pid, ...childrenOf(provider.pid)];
    expect(tree).toHaveLength(3);
    const started = Date.now();
    provider.child.kill('SIGTERM');
    const { code } = await provider.exited;
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(code).toBe(0);
    await eventually('every worker gone', () => (tree.some(isAlive) ? undefined : true), 2_000);
  }, 20_000);
});

test('workers whose primary is killed stop by themselves', async () => {
  const database = await createTestDatabase('cluster-orphan');
  const dataDir = mkdtempSync(join(tmpdir(), 'idp-cluster-'));
  const p = startProviderProcess(
    TSX,
    { ...productionSecrets(), WEB_CONCURRENCY: '2', PORT: String(await freePort()), HOST: '127.0.0.1', DATABASE_URL: database.url, DATA_DIR: dataDir, TENANTS_FILE: 'test/production/tenants.yaml' },
    process.cwd(),
  );
  try {
    const workers = await eventually('two workers listening', () => (listeningWorkers(p).length >= 2 ? listeningWorkers(p) : undefined), 90_000);
    process.kill(p.pid, 'SIGKILL');
    await p.exited;
    // (node:cluster ends a worker whose channel to the primary closes unexpectedly.)
    await eventually('the orphaned workers gone', () => (workers.some(isAlive) ? undefined : true), 10_000);
  } finally {
    await p.kill();
    for (const pid of listeningWorkers(p)) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    await database.drop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}, 120_000);
