// Housekeeping deletes expired rows in batches, on one instance at a time (a PostgreSQL advisory lock
// on a connection of its own), and keeps what the login, recovery and activation steps still read.
import { randomUUID } from 'node:crypto';
import { HOUSEKEEPING_LOCK_KEY, startHousekeeping, type HousekeepingOptions, type HousekeepingServices, type PurgeCounts } from '../../src/housekeeping.js';
import { createLogger } from '../../src/logger.js';
import { openDatabase, MEMORY_DATA_DIR, type Database } from '../../src/persistence/database.js';
import { LoginEventRepository } from '../../src/persistence/login-event.repository.js';
import { LoginFlowRepository } from '../../src/persistence/login-flow.repository.js';
import { OidcPayloadRepository } from '../../src/persistence/oidc-payload.repository.js';
import { PasskeyRepository } from '../../src/persistence/passkey.repository.js';
import { OneTimePasswordRepository } from '../../src/persistence/one-time-password.repository.js';
import { AuditRepository } from '../../src/persistence/audit.repository.js';
import { AuditService } from '../../src/audit/audit.service.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';

const DAY = 24 * 3600_000;
const EXPIRED = 180;
const LIVE = 20;
const BATCH = 50;
const config = { loginEventRetentionDays: 90, auditRetentionDays: 400 };
const silent = createLogger('silent');

function servicesOf(db: Database): HousekeepingServices {
  return {
    flows: new LoginFlowRepository(db.prisma, db.sql),
    payloads: new OidcPayloadRepository(db.prisma, db.sql),
    events: new LoginEventRepository(db.prisma),
    otpRepo: new OneTimePasswordRepository(db.prisma, db.sql),
    passkeys: new PasskeyRepository(db.prisma, db.sql),
    audit: new AuditService(new AuditRepository(db.prisma)),
    exclusive: db,
  };
}

interface Seeded {
  /** Rows housekeeping must delete, per table. */
  expired: PurgeCounts;
  /** Ids of rows that must stay. */
  kept: { flows: string[]; codes: string[]; challenges: string[]; payloads: string[]; events: string[]; audit: string[] };
}

/** `expired` of each kind past their time, `live` ones not, and the account-level codes that must stay. */
async function seed(db: Database, expired = EXPIRED, live = LIVE): Promise<Seeded> {
  const q = db.sql.query.bind(db.sql);
  const tag = randomUUID().slice(0, 8);
  // Flows with one login code each: expired an hour ago, or live for ten more minutes.
  for (const [n, offset, label] of [[expired, '-1 hour', 'old'], [live, '10 minutes', 'live']] as const) {
    await q(
      `WITH f AS (
         INSERT INTO login_flows (id, interaction_uid, tenant_id, client_id, expires_at, updated_at)
         SELECT gen_random_uuid(), $1 || i, 't1', 'c1', now() + $2::interval, now() FROM generate_series(1, $3::int) i
         RETURNING id, expires_at)
       INSERT INTO one_time_passwords (id, flow_id, purpose, code_hmac, expires_at)
       SELECT gen_random_uuid(), f.id, 'login', 'h', f.expires_at FROM f`,
      [`${tag}-${label}-`, offset, n],
    );
  }
  for (const [n, offset] of [[expired, '-1 minute'], [live, '1 hour']] as const) {
    await q(
      `INSERT INTO oidc_payloads (id, type, payload, expires_at) SELECT $1 || i, 'Session', '{}'::jsonb, now() + $2::interval FROM generate_series(1, $3::int) i`,
      [`${tag}-${offset}-`, offset, n],
    );
  }
  await q(`INSERT INTO oidc_payloads (id, type, payload) VALUES ($1, 'Client', '{}'::jsonb)`, [`${tag}-no-expiry`]);
  // Passkey challenges: expired a minute ago (go, counted with the codes), or valid for five more.
  for (const [n, offset] of [[expired, '-1 minute'], [live, '5 minutes']] as const) {
    await q(
      `INSERT INTO webauthn_challenges (challenge, purpose, binding, expires_at) SELECT $1 || i, 'login', 'b', now() + $2::interval FROM generate_series(1, $3::int) i`,
      [`${tag}-${offset}-`, offset, n],
    );
  }
  for (const [n, offset] of [[expired, '-91 days'], [live, '-89 days']] as const) {
    await q(
      `INSERT INTO login_events (id, tenant_id, result, created_at) SELECT gen_random_uuid(), 't1', 'success', now() + $1::interval FROM generate_series(1, $2::int) i`,
      [offset, n],
    );
  }
  // Staff audit records: past AUDIT_RETENTION_DAYS (400 here) by a day (go), or a day short of it (stay).
  for (const [n, offset] of [[expired, '-401 days'], [live, '-399 days']] as const) {
    await q(
      `INSERT INTO audit_records (id, tenant_id, actor_kind, actor_id, action, created_at) SELECT gen_random_uuid(), 't1', 'api', 'c1', 'account.created', now() + $1::interval FROM generate_series(1, $2::int) i`,
      [offset, n],
    );
  }
  // Activation codes of one account: the oldest is superseded and a week past its expiry (goes); the
  // second is superseded but expired only an hour ago (kept a while); the newest expired long ago, but
  // is what answers "expired" (kept). A device proof's codes all stay: its failures count from the first.
  const account = randomUUID();
  const codes = async (purpose: string, rows: Array<[string, string]>) => {
    const ids: string[] = [];
    for (const [created, expires] of rows) {
      const [r] = await q<{ id: string }>(
        `INSERT INTO one_time_passwords (id, account_id, purpose, code_hmac, created_at, expires_at)
         VALUES (gen_random_uuid(), $1::uuid, $2, 'h', now() + $3::interval, now() + $4::interval) RETURNING id`,
        [account, purpose, created, expires],
      );
      ids.push(r!.id);
    }
    return ids;
  };
  const [, graced, newest] = await codes('activation', [['-30 days', '-7 days'], ['-20 days', '-1 hour'], ['-10 days', '-9 days']]);
  const proof = await codes(`device_verify:${randomUUID()}`, [['-30 days', '-29 days'], ['-20 days', '-19 days']]);

  const ids = async (sql: string) => (await q<{ id: string }>(sql)).map((r) => r.id).sort();
  return {
    expired: { flows: expired, codes: expired + 1 + expired, payloads: expired, loginEvents: expired, auditRecords: expired },
    kept: {
      flows: await ids(`SELECT id::text FROM login_flows WHERE expires_at > now()`),
      codes: [...(await ids(`SELECT id::text FROM one_time_passwords WHERE flow_id IS NOT NULL AND expires_at > now()`)), graced!, newest!, ...proof].sort(),
      challenges: await ids(`SELECT challenge AS id FROM webauthn_challenges WHERE expires_at > now()`),
      payloads: await ids(`SELECT id FROM oidc_payloads WHERE expires_at IS NULL OR expires_at > now()`),
      events: await ids(`SELECT id::text FROM login_events WHERE created_at > now() - interval '90 days'`),
      audit: await ids(`SELECT id::text FROM audit_records WHERE created_at > now() - interval '400 days'`),
    },
  };
}

async function remaining(db: Database): Promise<Seeded['kept']> {
  const ids = async (sql: string) => (await db.sql.query<{ id: string }>(sql)).map((r) => r.id).sort();
  return {
    flows: await ids('SELECT id::text FROM login_flows'),
    codes: await ids('SELECT id::text FROM one_time_passwords'),
    challenges: await ids('SELECT challenge AS id FROM webauthn_challenges'),
    payloads: await ids('SELECT id FROM oidc_payloads'),
    events: await ids('SELECT id::text FROM login_events'),
    audit: await ids('SELECT id::text FROM audit_records'),
  };
}

function recorder() {
  const batches: Record<keyof PurgeCounts, number[]> = { flows: [], codes: [], payloads: [], loginEvents: [], auditRecords: [] };
  const onBatch: HousekeepingOptions['onBatch'] = (table, n) => batches[table].push(n);
  return { batches, onBatch };
}

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('housekeeping on PostgreSQL', () => {
  let t: TestDatabase;
  let a: Database;
  let b: Database;
  beforeAll(async () => {
    t = await createTestDatabase('housekeeping');
    a = await openDatabase({ databaseUrl: t.url, dataDir: MEMORY_DATA_DIR });
    b = await openDatabase({ databaseUrl: t.url, dataDir: MEMORY_DATA_DIR });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await t?.drop();
  });
  afterEach(async () => {
    await a.sql.query('TRUNCATE login_flows, one_time_passwords, webauthn_challenges, oidc_payloads, login_events, audit_records');
  });

  // Housekeeping's lock in this test's database (pg_locks lists the whole server's, other suites' migration locks too).
  const advisoryLocks = async () =>
    (
      await a.sql.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_locks
          WHERE locktype = 'advisory' AND objid = $1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        [HOUSEKEEPING_LOCK_KEY],
      )
    )[0]!.n;

  test('deletes only what expired, in batches, and keeps the counts', async () => {
    const seeded = await seed(a);
    const { batches, onBatch } = recorder();
    const hk = startHousekeeping(servicesOf(a), silent, config, 3600_000, { batchSize: BATCH, pauseMs: 1, onBatch, runAtStart: false });
    try {
      expect(hk.stats()).toEqual({ runs: 0, lastRunAt: null, lastDurationMs: null, lastRun: null, purged: { flows: 0, codes: 0, payloads: 0, loginEvents: 0, auditRecords: 0 }, skippedBecauseLocked: 0 });
      const before = Date.now();
      await hk.run();
      expect(await remaining(a)).toEqual(seeded.kept);
      // 180 rows in batches of 50: three full ones and the rest. The flows' codes go with their flows
      // (and are counted there); the superseded activation code takes one statement of its own, then
      // the expired passkey challenges are counted with the codes.
      expect(batches).toEqual({ flows: [50, 50, 50, 30], codes: [1, 50, 50, 50, 30], payloads: [50, 50, 50, 30], loginEvents: [50, 50, 50, 30], auditRecords: [50, 50, 50, 30] });
      const stats = hk.stats();
      expect(stats).toMatchObject({ runs: 1, purged: seeded.expired, lastRun: seeded.expired, skippedBecauseLocked: 0 });
      expect(stats.lastRunAt!.getTime()).toBeGreaterThanOrEqual(before);
      expect(stats.lastDurationMs).toBeGreaterThanOrEqual(0);

      // Nothing left to do: a run deletes nothing, the totals stay.
      await hk.run();
      expect(hk.stats()).toMatchObject({ runs: 2, purged: seeded.expired, lastRun: { flows: 0, codes: 0, payloads: 0, loginEvents: 0, auditRecords: 0 } });
      expect(await remaining(a)).toEqual(seeded.kept);
      expect(await advisoryLocks()).toBe(0);
    } finally {
      hk.stop();
    }
  });

  test('two instances at once: one runs, the other skips, and the counts add up', async () => {
    const seeded = await seed(a);
    const aInside = deferred();
    const bDone = deferred();
    // Instance A holds its run open between two batches until B has tried.
    const hkA = startHousekeeping(servicesOf(a), silent, config, 3600_000, {
      batchSize: BATCH,
      runAtStart: false,
      pause: async () => {
        aInside.resolve();
        await bDone.promise;
      },
    });
    const hkB = startHousekeeping(servicesOf(b), silent, config, 3600_000, { batchSize: BATCH, pauseMs: 1, runAtStart: false });
    try {
      const runA = hkA.run();
      await aInside.promise;
      expect(await advisoryLocks()).toBe(1);
      await hkB.run();
      expect(hkB.stats()).toMatchObject({ runs: 0, skippedBecauseLocked: 1, purged: { flows: 0, codes: 0, payloads: 0, loginEvents: 0, auditRecords: 0 } });
      bDone.resolve();
      await runA;
      expect(hkA.stats()).toMatchObject({ runs: 1, skippedBecauseLocked: 0, purged: seeded.expired });
      expect(await advisoryLocks()).toBe(0);

      // The lock is free again: B's next run gets it and finds nothing left; together they deleted each row once.
      await hkB.run();
      expect(hkB.stats()).toMatchObject({ runs: 1, skippedBecauseLocked: 1 });
      const total = (k: keyof PurgeCounts) => hkA.stats().purged[k] + hkB.stats().purged[k];
      expect({ flows: total('flows'), codes: total('codes'), payloads: total('payloads'), loginEvents: total('loginEvents'), auditRecords: total('auditRecords') }).toEqual(seeded.expired);
      expect(await remaining(a)).toEqual(seeded.kept);
    } finally {
      hkA.stop();
      hkB.stop();
    }
  });

  test('started together, two instances never purge a row twice', async () => {
    const seeded = await seed(a);
    const hks = [a, b].map((db) => startHousekeeping(servicesOf(db), silent, config, 3600_000, { batchSize: BATCH, pauseMs: 20, runAtStart: false }));
    try {
      await Promise.all(hks.map((hk) => hk.run()));
      const stats = hks.map((hk) => hk.stats());
      const runs = stats.map((s) => s.runs).sort();
      const skips = stats.map((s) => s.skippedBecauseLocked).sort();
      // Either one skipped while the other held the lock, or (if one finished before the other began) both ran.
      if (runs[0] === 0) expect(skips).toEqual([0, 1]);
      else expect(runs).toEqual([1, 1]);
      const total = (k: keyof PurgeCounts) => stats[0]!.purged[k] + stats[1]!.purged[k];
      expect({ flows: total('flows'), codes: total('codes'), payloads: total('payloads'), loginEvents: total('loginEvents'), auditRecords: total('auditRecords') }).toEqual(seeded.expired);
      expect(await remaining(a)).toEqual(seeded.kept);
    } finally {
      hks.forEach((hk) => hk.stop());
    }
  });

  test('stopping cuts a run through a backlog short: at most one batch per table', async () => {
    await seed(a);
    const { batches, onBatch } = recorder();
    // The shutdown arrives during the first pause, after the first batch of flows.
    const hk = startHousekeeping(servicesOf(a), silent, config, 3600_000, { batchSize: BATCH, runAtStart: false, onBatch, pause: async () => void hk.stop() });
    await hk.run();
    expect(batches).toEqual({ flows: [50], codes: [1, 50], payloads: [50], loginEvents: [50], auditRecords: [50] });
    expect(hk.stats()).toMatchObject({ runs: 1, purged: { flows: 50, codes: 101, payloads: 50, loginEvents: 50, auditRecords: 50 } });
    expect(await advisoryLocks()).toBe(0);
  });

  test('a failing run releases the lock and is reported, not thrown', async () => {
    await seed(a, 10, 1);
    // Only the one method housekeeping calls is replaced, hence the cast.
    const failing = { ...servicesOf(a), payloads: { purgeExpired: () => Promise.reject(new Error('boom')) } } as unknown as HousekeepingServices;
    const warnings: unknown[] = [];
    const logger = Object.assign(createLogger('silent'), { warn: (o: unknown) => void warnings.push(o) });
    const hk = startHousekeeping(failing, logger, config, 3600_000, { batchSize: BATCH, pauseMs: 1, runAtStart: false });
    try {
      await hk.run();
      expect(warnings).toHaveLength(1);
      expect(hk.stats()).toMatchObject({ runs: 0, skippedBecauseLocked: 0 });
      expect(await advisoryLocks()).toBe(0);
      expect(await b.tryExclusive(HOUSEKEEPING_LOCK_KEY, async () => 'ran')).toEqual({ acquired: true, value: 'ran' });
    } finally {
      hk.stop();
    }
  });
});

describe('housekeeping on PGlite', () => {
  let db: Database;
  beforeAll(async () => {
    db = await openDatabase({ dataDir: MEMORY_DATA_DIR });
  });
  afterAll(() => db?.close());

  test('purges in batches; a second housekeeper in the process skips while the first runs', async () => {
    const seeded = await seed(db, 120, 5);
    const { batches, onBatch } = recorder();
    const inside = deferred();
    const release = deferred();
    const first = startHousekeeping(servicesOf(db), silent, config, 3600_000, {
      batchSize: BATCH,
      runAtStart: false,
      onBatch,
      pause: async () => {
        inside.resolve();
        await release.promise;
      },
    });
    const second = startHousekeeping(servicesOf(db), silent, config, 3600_000, { batchSize: BATCH, runAtStart: false });
    try {
      const running = first.run();
      await inside.promise;
      await second.run();
      expect(second.stats()).toMatchObject({ runs: 0, skippedBecauseLocked: 1 });
      release.resolve();
      await running;
      expect(batches.flows).toEqual([50, 50, 20]);
      expect(first.stats()).toMatchObject({ runs: 1, purged: seeded.expired });
      expect(await remaining(db)).toEqual(seeded.kept);
    } finally {
      first.stop();
      second.stop();
    }
  });
});
