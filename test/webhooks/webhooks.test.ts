import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent, csrfOf, discover, startLogin, submit } from '../support/browser-less.js';
import { WebhookEvents } from '../../src/webhooks/webhook-events.js';
import { pino } from 'pino';
import { verifySignature } from '../../src/webhooks/webhook-signature.js';
import { targetProblem } from '../../src/webhooks/webhook-target.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TEST_TENANTS_YAML } from '../support/harness.js';
import { createTestDatabase } from '../support/database.js';
import { runAdminCli } from '../support/admin-cli.js';
import { waitUntil } from '../mail/mail-store.js';

const API = '/api/v1';
const T1 = { id: 'backoffice-t1', secret: 'backoffice-t1-secret-0123456789' };
const T2 = { id: 'backoffice-t2', secret: 'backoffice-t2-secret-0123456789' };
const MAX_ATTEMPTS = 8;

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  raw: string;
  body: Json;
}

/** A webhook receiver as a tenant would run one: it keeps what arrives; `/fail…` answers 500. */
function receiver() {
  const received: Received[] = [];
  let server: Server | undefined;
  let port = 0;
  const listen = async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        received.push({ path: req.url ?? '', headers: req.headers, raw, body: JSON.parse(raw) as Json });
        res.statusCode = req.url?.startsWith('/fail') ? 500 : 200;
        res.end('ok');
      });
    });
    await new Promise<void>((resolve) => server!.listen(port, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  };
  return {
    received,
    url: (path: string) => `http://127.0.0.1:${port}${path}`,
    start: listen,
    async stop() {
      server?.closeAllConnections();
      await new Promise<void>((resolve) => server?.close(() => resolve()) ?? resolve());
    },
  };
}

/** What the docs tell a receiver to do, written out independently of the provider's code: any v1 may match (two during a rotation). */
function receiverVerifies(secret: string, raw: string, header: string): boolean {
  const fields = header.split(',').map((p) => p.split('=') as [string, string]);
  const t = Number(fields.find(([k]) => k === 't')?.[1]);
  if (Math.abs(Date.now() / 1000 - t) > 300) return false;
  const expected = createHmac('sha256', secret).update(`${t}.${raw}`).digest();
  return fields.some(([k, v]) => {
    if (k !== 'v1') return false;
    const given = Buffer.from(v ?? '', 'hex');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

/** The project's polling wait (test/mail/mail-store.ts), with the description first as these tests read. */
const until = <T>(what: string, probe: () => T | Promise<T>) => waitUntil(probe, what);

const databases = (process.env.TEST_DATABASES ?? 'postgres,pglite').split(',') as Array<'postgres' | 'pglite'>;

describe.each(databases)('webhooks (%s)', (database) => {
  let s: TestServer;
  let rp: oidc.Configuration;
  let t1: string;
  let t2: string;
  const hooks = receiver();

  async function token(client: { id: string; secret: string }): Promise<string> {
    const config = await discover(s.issuer, client.id, client.secret);
    return (await oidc.clientCredentialsGrant(config, { scope: 'management' })).access_token;
  }

  async function call(method: string, path: string, opts: { token: string; body?: unknown }) {
    const headers: Record<string, string> = { authorization: `Bearer ${opts.token}` };
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(new URL(path, s.issuer), { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as Json };
  }

  async function register(path: string, extra: Json = {}, tok = t1) {
    const res = await call('POST', `${API}/webhooks`, { token: tok, body: { url: hooks.url(path), ...extra } });
    expect(res.status).toBe(201);
    return res.body as { id: string; secret: string; events: string[] };
  }

  const deliveries = async (hookId: string, tok = t1) => {
    const res = await call('GET', `${API}/webhooks/${hookId}/deliveries?limit=100`, { token: tok });
    expect(res.status).toBe(200);
    return res.body.items as Json[];
  };

  const arrived = (path: string, match: (b: Json) => boolean) => until(`a webhook at ${path}`, () => hooks.received.find((r) => r.path === path && match(r.body)));

  async function newAccount() {
    const u = uniqueUser('hook');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    return u;
  }

  /** Wrong codes up to t1's threshold (5): the account locks. */
  async function lockByWrongCodes(userId: string) {
    const login = await startLogin(rp, s.issuer);
    expect((await submit(login, 'identify', { userId })).status).toBe(303);
    for (let i = 1; i <= 4; i++) expect((await submit(login, 'otp', { otp: '11111111' })).status).toBe(401);
    expect((await submit(login, 'otp', { otp: '11111111' })).status).toBe(403);
  }

  beforeAll(async () => {
    await hooks.start();
    s = await startTestServer({
      database,
      env: {
        // The receiver runs on 127.0.0.1: allowed for this suite only.
        WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true',
        WEBHOOK_RETRY_BASE: '0.2',
        WEBHOOK_RETRY_MAX: '0.5',
        WEBHOOK_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
        WEBHOOK_POLL_INTERVAL: '0.2',
        WEBHOOK_TIMEOUT: '2',
        WEBHOOK_DISABLE_AFTER_FAILURES: '2',
      },
    });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    [t1, t2] = await Promise.all([token(T1), token(T2)]);
  });
  afterAll(async () => {
    await s?.close();
    await hooks.stop();
  });

  test('wrong codes that lock an account bring a signed account.locked event within seconds', async () => {
    const hook = await register('/locks');
    expect(hook.secret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    expect(hook.events).not.toContain('login.failed');
    // The secret is shown once: never in the list.
    const listed = await call('GET', `${API}/webhooks`, { token: t1 });
    expect(JSON.stringify(listed.body)).not.toContain(hook.secret);

    const u = await newAccount();
    const started = Date.now();
    await lockByWrongCodes(u.userId);
    const got = await arrived('/locks', (b) => b.type === 'account.locked' && b.data.userId === u.userId);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(got.body).toMatchObject({ type: 'account.locked', tenant: 't1', data: { userId: u.userId, lockedUntil: null, failedAttempts: 5 } });
    expect(got.headers['anshin-event-id']).toBe(got.body.id);
    expect(got.headers['anshin-event-type']).toBe('account.locked');
    expect(got.headers['content-type']).toBe('application/json');
    const signature = got.headers['anshin-signature'] as string;
    expect(signature).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    expect(receiverVerifies(hook.secret, got.raw, signature)).toBe(true);
    expect(verifySignature(hook.secret, got.raw, signature)).toBe(true);
    // A changed body, another secret or an old timestamp does not verify.
    expect(verifySignature(hook.secret, got.raw.replace(u.userId, 'someone-else'), signature)).toBe(false);
    expect(verifySignature(`${hook.secret}x`, got.raw, signature)).toBe(false);
    expect(verifySignature(hook.secret, got.raw, signature, { now: new Date(Date.now() + 301_000) })).toBe(false);

    // login.* are opt-in: the four wrong codes queued nothing for this hook (they were queued, if at
    // all, before the lock's event, in the requests themselves).
    const log = await until('the delivery to be logged as delivered', async () => {
      const items = await deliveries(hook.id);
      return items.some((d) => d.eventType === 'account.locked' && d.status === 'delivered') ? items : undefined;
    });
    expect(log.map((d) => d.eventType)).toEqual(['account.locked']);
    expect(log[0]).toMatchObject({ eventId: got.body.id, status: 'delivered', attempts: 1, attemptLog: [{ number: 1, statusCode: 200, error: null }] });
  });

  test('login events reach a hook that opted in', async () => {
    const hook = await register('/logins', { events: ['login.succeeded', 'login.failed'] });
    const u = await newAccount();
    const before = s.smtp.messages.length;
    const login = await startLogin(rp, s.issuer);
    expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
    expect((await submit(login, 'otp', { otp: '11111111' })).status).toBe(401);
    const otp = await s.smtp.otpFor(u.email, before);
    expect((await submit(login, 'otp', { otp })).status).toBe(303);
    const failed = await arrived('/logins', (b) => b.type === 'login.failed' && b.data.userId === u.userId);
    expect(failed.body.data).toMatchObject({ result: 'wrong_otp', method: 'otp', clientId: 'rp-basic' });
    const ok = await arrived('/logins', (b) => b.type === 'login.succeeded' && b.data.userId === u.userId);
    expect(ok.body.data).toMatchObject({ result: 'success', clientId: 'rp-basic', sourceIp: expect.any(String) });
    expect(receiverVerifies(hook.secret, ok.raw, ok.headers['anshin-signature'] as string)).toBe(true);
  });

  test('an event raised while the receiver is down arrives once it is back; the log shows the failed attempt, then the success', async () => {
    const hook = await register('/outage', { events: ['account.unlocked'] });
    const u = await newAccount();
    await lockByWrongCodes(u.userId);
    await hooks.stop();
    try {
      expect((await call('POST', `${API}/accounts/${u.userId}/unlock`, { token: t1 })).status).toBe(200);
      await until('a failed attempt in the delivery log', async () => {
        const [d] = await deliveries(hook.id);
        return d && d.attemptLog.length > 0 ? d : undefined;
      });
    } finally {
      await hooks.start();
    }
    const got = await arrived('/outage', (b) => b.type === 'account.unlocked' && b.data.userId === u.userId);
    expect(receiverVerifies(hook.secret, got.raw, got.headers['anshin-signature'] as string)).toBe(true);
    const d = await until('the delivery to be logged as delivered', async () => {
      const [x] = await deliveries(hook.id);
      return x?.status === 'delivered' ? x : undefined;
    });
    expect(d.eventId).toBe(got.body.id);
    expect(d.attempts).toBeGreaterThanOrEqual(2);
    const attempts = d.attemptLog as Json[];
    expect(attempts[0]).toMatchObject({ number: 1, statusCode: null, error: expect.stringMatching(/ECONNREFUSED|refused|fetch failed/i) });
    expect(attempts.at(-1)).toMatchObject({ number: d.attempts, statusCode: 200, error: null });
    expect(attempts.map((a) => a.number)).toEqual(attempts.map((_, i) => i + 1));
  });

  test(`a receiver that keeps failing is given up after ${MAX_ATTEMPTS} attempts, each logged`, async () => {
    const hook = await register('/fail');
    const queued = await call('POST', `${API}/webhooks/${hook.id}/test`, { token: t1 });
    expect(queued.status).toBe(202);
    const d = await until('the delivery to be given up', async () => {
      const [x] = await deliveries(hook.id);
      return x?.status === 'failed' ? x : undefined;
    });
    expect(d).toMatchObject({ id: queued.body.deliveryId, eventType: 'webhook.test', attempts: MAX_ATTEMPTS, nextAttemptAt: null, failedAt: expect.any(String) });
    expect((d.attemptLog as Json[]).map((a) => [a.statusCode, a.error])).toEqual(Array.from({ length: MAX_ATTEMPTS }, () => [500, 'HTTP 500']));
    // Each one reached the receiver with the same event id.
    const tries = hooks.received.filter((r) => r.path === '/fail');
    expect(tries).toHaveLength(MAX_ATTEMPTS);
    expect(new Set(tries.map((r) => r.headers['anshin-event-id']))).toEqual(new Set([queued.body.eventId]));
  });

  test('a test delivery goes to that hook only, signed', async () => {
    const hook = await register('/test-only');
    const other = await register('/test-other');
    const queued = await call('POST', `${API}/webhooks/${hook.id}/test`, { token: t1 });
    expect(queued.status).toBe(202);
    const got = await arrived('/test-only', (b) => b.id === queued.body.eventId);
    expect(got.body).toMatchObject({ type: 'webhook.test', tenant: 't1', data: { webhookId: hook.id } });
    expect(receiverVerifies(hook.secret, got.raw, got.headers['anshin-signature'] as string)).toBe(true);
    expect(receiverVerifies(other.secret, got.raw, got.headers['anshin-signature'] as string)).toBe(false);
    expect(await deliveries(other.id)).toEqual([]);
  });

  test('a rotated secret: the answer shows the new one once; during the grace period every delivery carries both signatures, then only the new one', async () => {
    const hook = await register('/rotate');
    const rotated = await call('POST', `${API}/webhooks/${hook.id}/rotate-secret`, { token: t1 });
    expect(rotated.status).toBe(200);
    const fresh = rotated.body.secret as string;
    expect(fresh).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    expect(fresh).not.toBe(hook.secret);
    // The old secret signs for 24 hours by default.
    const expires = Date.parse(rotated.body.previousSecretExpiresAt as string);
    expect(Math.abs(expires - (Date.now() + 24 * 3_600_000))).toBeLessThan(60_000);
    const read = await call('GET', `${API}/webhooks/${hook.id}`, { token: t1 });
    expect(read.status).toBe(200);
    expect(read.body).toMatchObject({ id: hook.id, enabled: true, previousSecretExpiresAt: rotated.body.previousSecretExpiresAt });
    expect(JSON.stringify(read.body)).not.toContain(fresh);

    const during = await call('POST', `${API}/webhooks/${hook.id}/test`, { token: t1 });
    const got = await arrived('/rotate', (b) => b.id === during.body.eventId);
    const header = got.headers['anshin-signature'] as string;
    expect(header).toMatch(/^t=\d+,v1=[0-9a-f]{64},v1=[0-9a-f]{64}$/);
    // A receiver still holding the old secret and one already on the new secret both accept it.
    expect(receiverVerifies(hook.secret, got.raw, header)).toBe(true);
    expect(receiverVerifies(fresh, got.raw, header)).toBe(true);
    expect(verifySignature(hook.secret, got.raw, header)).toBe(true);
    expect(verifySignature(fresh, got.raw, header)).toBe(true);
    expect(receiverVerifies(`${fresh}x`, got.raw, header)).toBe(false);

    // A second rotation with no grace: only the newest secret signs; the first is gone, the second at once.
    const again = await call('POST', `${API}/webhooks/${hook.id}/rotate-secret`, { token: t1, body: { graceSeconds: 0 } });
    expect(again.status).toBe(200);
    expect(again.body.previousSecretExpiresAt).toBeNull();
    const newest = again.body.secret as string;
    const after = await call('POST', `${API}/webhooks/${hook.id}/test`, { token: t1 });
    const late = await arrived('/rotate', (b) => b.id === after.body.eventId);
    const single = late.headers['anshin-signature'] as string;
    expect(single).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    expect(receiverVerifies(newest, late.raw, single)).toBe(true);
    expect(receiverVerifies(fresh, late.raw, single)).toBe(false);
    expect(receiverVerifies(hook.secret, late.raw, single)).toBe(false);
    expect((await call('POST', `${API}/webhooks/${hook.id}/rotate-secret`, { token: t1, body: { graceSeconds: 8 * 24 * 3600 } })).status).toBe(400);
  });

  test('PATCH changes the URL (checked again), the events and the description; GET shows the hook', async () => {
    const hook = await register('/before-move', { description: 'first' });
    const refused = await call('PATCH', `${API}/webhooks/${hook.id}`, { token: t1, body: { url: 'ftp://127.0.0.1/x' } });
    expect(refused.status).toBe(400);
    expect(refused.body.errors).toEqual([{ field: 'url', message: expect.any(String) }]);
    expect((await call('PATCH', `${API}/webhooks/${hook.id}`, { token: t1, body: {} })).status).toBe(400);
    expect((await call('PATCH', `${API}/webhooks/${hook.id}`, { token: t1, body: { secret: 'x' } })).status).toBe(400);
    const changed = await call('PATCH', `${API}/webhooks/${hook.id}`, { token: t1, body: { url: hooks.url('/moved'), events: ['account.deleted', 'account.deleted'], description: null } });
    expect(changed.status).toBe(200);
    expect(changed.body).toMatchObject({ id: hook.id, url: hooks.url('/moved'), events: ['account.deleted'], description: null, enabled: true });
    expect((await call('GET', `${API}/webhooks/${hook.id}`, { token: t1 })).body).toEqual(changed.body);
    const queued = await call('POST', `${API}/webhooks/${hook.id}/test`, { token: t1 });
    const got = await arrived('/moved', (b) => b.id === queued.body.eventId);
    expect(receiverVerifies(hook.secret, got.raw, got.headers['anshin-signature'] as string)).toBe(true);
    expect(hooks.received.some((r) => r.path === '/before-move')).toBe(false);
  });

  test('a delivery sent again: a new delivery of the same event id and the same body, shown in the log next to the original', async () => {
    const hook = await register('/redeliver');
    const queued = await call('POST', `${API}/webhooks/${hook.id}/test`, { token: t1 });
    const first = await arrived('/redeliver', (b) => b.id === queued.body.eventId);
    await until('the first delivery to be logged', async () => ((await deliveries(hook.id))[0]?.status === 'delivered' ? true : undefined));
    const again = await call('POST', `${API}/webhooks/${hook.id}/deliveries/${queued.body.deliveryId}/redeliver`, { token: t1 });
    expect(again.status).toBe(202);
    expect(again.body).toMatchObject({ eventId: queued.body.eventId, eventType: 'webhook.test', redeliveryOf: queued.body.deliveryId });
    expect(again.body.deliveryId).not.toBe(queued.body.deliveryId);
    const second = await until('the redelivery', () => hooks.received.filter((r) => r.path === '/redeliver' && r.body.id === queued.body.eventId)[1]);
    expect(second.raw).toBe(first.raw);
    expect(second.headers['anshin-event-id']).toBe(queued.body.eventId);
    expect(receiverVerifies(hook.secret, second.raw, second.headers['anshin-signature'] as string)).toBe(true);
    const log = await until('the redelivery to be logged', async () => {
      const items = await deliveries(hook.id);
      return items.length === 2 && items.every((d) => d.status === 'delivered') ? items : undefined;
    });
    expect(log.map((d) => [d.id, d.redeliveryOf])).toEqual([
      [again.body.deliveryId, queued.body.deliveryId],
      [queued.body.deliveryId, null],
    ]);
    expect((await call('POST', `${API}/webhooks/${hook.id}/deliveries/00000000-0000-4000-8000-000000000000/redeliver`, { token: t1 })).status).toBe(404);
    expect((await call('POST', `${API}/webhooks/${hook.id}/deliveries/nonsense/redeliver`, { token: t1 })).status).toBe(404);
  });

  test('a hook whose deliveries keep being given up is turned off (no more events queued for it) until PATCH enabled: true', async () => {
    const hook = await register('/fail-off', { events: ['account.deleted'] });
    const witness = await register('/off-witness', { events: ['account.deleted'] });
    // WEBHOOK_DISABLE_AFTER_FAILURES is 2 in this suite: two given-up deliveries in a row.
    for (let i = 0; i < 2; i++) expect((await call('POST', `${API}/webhooks/${hook.id}/test`, { token: t1 })).status).toBe(202);
    const off = await until('the hook to be turned off', async () => {
      const h = await call('GET', `${API}/webhooks/${hook.id}`, { token: t1 });
      return h.body.enabled === false ? h.body : undefined;
    });
    expect(off).toMatchObject({ enabled: false, disabledAt: expect.any(String), consecutiveFailures: 2 });
    expect((await call('GET', `${API}/webhooks`, { token: t1 })).body.items).toContainEqual(expect.objectContaining({ id: hook.id, enabled: false }));

    // An event raised now reaches the witness, queued by the same statement, and not the hook turned off.
    const u = uniqueUser('off');
    expect((await call('POST', `${API}/accounts`, { token: t1, body: { userId: u.userId, devices: [{ email: u.email }] } })).status).toBe(201);
    expect((await call('DELETE', `${API}/accounts/${u.userId}`, { token: t1 })).status).toBe(204);
    await arrived('/off-witness', (b) => b.type === 'account.deleted' && b.data.userId === u.userId);
    expect((await deliveries(hook.id)).map((d) => d.eventType)).toEqual(['webhook.test', 'webhook.test']);

    const on = await call('PATCH', `${API}/webhooks/${hook.id}`, { token: t1, body: { enabled: true, url: hooks.url('/back-on') } });
    expect(on.status).toBe(200);
    expect(on.body).toMatchObject({ enabled: true, disabledAt: null, consecutiveFailures: 0 });
    const v = uniqueUser('on');
    expect((await call('POST', `${API}/accounts`, { token: t1, body: { userId: v.userId, devices: [{ email: v.email }] } })).status).toBe(201);
    expect((await call('DELETE', `${API}/accounts/${v.userId}`, { token: t1 })).status).toBe(204);
    const got = await arrived('/back-on', (b) => b.type === 'account.deleted' && b.data.userId === v.userId);
    expect(receiverVerifies(hook.secret, got.raw, got.headers['anshin-signature'] as string)).toBe(true);
    expect(witness.id).not.toBe(hook.id);
  });

  test("another tenant's token sees none of this tenant's hooks and cannot test, read or delete them", async () => {
    const hook = await register('/isolated');
    const mine = await register('/t2-hook', {}, t2);
    const listed = await call('GET', `${API}/webhooks`, { token: t2 });
    expect(listed.body.items.map((h: Json) => h.id)).toEqual([mine.id]);
    expect((await call('POST', `${API}/webhooks/${hook.id}/test`, { token: t2 })).status).toBe(404);
    expect((await call('GET', `${API}/webhooks/${hook.id}/deliveries`, { token: t2 })).status).toBe(404);
    expect((await call('DELETE', `${API}/webhooks/${hook.id}`, { token: t2 })).status).toBe(404);
    expect((await call('GET', `${API}/webhooks/${hook.id}`, { token: t2 })).status).toBe(404);
    expect((await call('PATCH', `${API}/webhooks/${hook.id}`, { token: t2, body: { enabled: false } })).status).toBe(404);
    expect((await call('POST', `${API}/webhooks/${hook.id}/rotate-secret`, { token: t2 })).status).toBe(404);
    const test1 = await call('POST', `${API}/webhooks/${hook.id}/test`, { token: t1 });
    expect((await call('POST', `${API}/webhooks/${hook.id}/deliveries/${test1.body.deliveryId}/redeliver`, { token: t2 })).status).toBe(404);
    // t2's own hook with t1's delivery id: not found either.
    expect((await call('POST', `${API}/webhooks/${mine.id}/deliveries/${test1.body.deliveryId}/redeliver`, { token: t2 })).status).toBe(404);
    expect((await call('GET', `${API}/webhooks/not-a-uuid`, { token: t1 })).status).toBe(404);
    expect((await call('GET', `${API}/webhooks/not-a-uuid/deliveries`, { token: t1 })).status).toBe(404);
    // t1's events do not reach t2's hook: t1's hook gets the lock, t2's log stays empty.
    const u = await newAccount();
    await lockByWrongCodes(u.userId);
    await arrived('/isolated', (b) => b.type === 'account.locked' && b.data.userId === u.userId);
    expect(await deliveries(mine.id, t2)).toEqual([]);
    // Still there for its own tenant.
    expect((await call('DELETE', `${API}/webhooks/${hook.id}`, { token: t1 })).status).toBe(204);
  });

  // The CLI needs the database to itself with PGlite (the provider holds it), so it runs on PostgreSQL only.
  (database === 'postgres' ? test : test.skip)('account changes through the API and the CLI raise their events; the CLI\'s go out through the running provider', async () => {
    const hook = await register('/changes', { events: ['devices.replaced', 'login_method.changed', 'account.deleted', 'account.unlocked'] });
    const u = uniqueUser('chg');
    expect((await call('POST', `${API}/accounts`, { token: t1, body: { userId: u.userId, devices: [{ email: u.email }] } })).status).toBe(201);
    expect((await call('PATCH', `${API}/accounts/${u.userId}`, { token: t1, body: { devices: [{ email: `b-${u.email}` }, { email: `c-${u.email}` }] } })).status).toBe(200);
    const replaced = await arrived('/changes', (b) => b.type === 'devices.replaced' && b.data.userId === u.userId);
    // Counts only: addresses stay out of the events.
    expect(replaced.body.data).toEqual({ userId: u.userId, count: 2 });
    // An unlock of an account that was not locked changed nothing and raises nothing.
    expect((await call('POST', `${API}/accounts/${u.userId}/unlock`, { token: t1 })).status).toBe(200);

    const dir = mkdtempSync(join(tmpdir(), 'hooks-cli-'));
    try {
      writeFileSync(join(dir, 'tenants.yaml'), TEST_TENANTS_YAML);
      const r = await runAdminCli({ DATABASE_URL: s.config.databaseUrl!, TENANTS_FILE: join(dir, 'tenants.yaml'), SMTP_URL: s.smtp.url }, ['delete', 't1', u.userId, '--yes']);
      expect(r.code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const deleted = await arrived('/changes', (b) => b.type === 'account.deleted' && b.data.userId === u.userId);
    expect(receiverVerifies(hook.secret, deleted.raw, deleted.headers['anshin-signature'] as string)).toBe(true);
    expect((await deliveries(hook.id)).map((d) => d.eventType)).toEqual(['account.deleted', 'devices.replaced']);
  });

  test('an activation completed on its pages raises account.activated', async () => {
    await register('/activated', { events: ['account.activated'] });
    const u = uniqueUser('act');
    const created = await call('POST', `${API}/accounts`, { token: t1, body: { userId: u.userId, devices: [{ email: u.email }] } });
    expect(created.status).toBe(201);
    const url = new URL(created.body.activation.url as string);
    const agent = new Agent(s.issuer);
    const page = await agent.get(url.pathname + url.search);
    const verified = await agent.post(url.pathname, { _csrf: csrfOf(await page.text()), userId: u.userId, otp: created.body.activation.otp as string });
    expect(verified.status).toBe(303);
    const form = await agent.get('/activation/t1/register');
    expect((await agent.post('/activation/t1/register', { _csrf: csrfOf(await form.text()), questionId: 'birthplace', answer: 'Sapporo' })).status).toBe(303);
    const got = await arrived('/activated', (b) => b.type === 'account.activated' && b.data.userId === u.userId);
    expect(got.body.tenant).toBe('t1');
  });

  test('receiver URLs: http(s) only, https in production, no credentials, no internal addresses unless allowed', async () => {
    const publicDns = async () => ['93.184.215.14'];
    const prod = { production: true, allowPrivateTargets: false, resolve: publicDns };
    const dev = { production: false, allowPrivateTargets: false, resolve: publicDns };
    expect(await targetProblem('https://hooks.example.com/in', prod)).toBeUndefined();
    expect(await targetProblem('http://hooks.example.com/in', prod)).toBe('webhook_url_https');
    expect(await targetProblem('http://hooks.example.com/in', dev)).toBeUndefined();
    expect(await targetProblem('ftp://hooks.example.com/in', dev)).toBe('webhook_url_scheme');
    expect(await targetProblem('not a url', dev)).toBe('webhook_url_invalid');
    expect(await targetProblem('https://user:pw@hooks.example.com/in', dev)).toBe('webhook_url_credentials');
    for (const internal of ['https://127.0.0.1/x', 'https://[::1]/x', 'https://10.1.2.3/x', 'https://169.254.169.254/latest']) {
      expect(await targetProblem(internal, { production: true, allowPrivateTargets: false })).toBe('webhook_url_private');
      expect(await targetProblem(internal, { production: true, allowPrivateTargets: true })).toBeUndefined();
    }
    // A public-looking name that resolves inward is refused too.
    expect(await targetProblem('https://inward.example.com/x', { production: true, allowPrivateTargets: false, resolve: async () => ['192.168.1.10'] })).toBe('webhook_url_private');
  });
});

test('raising an event never throws: a failed insert is logged and the caller goes on', async () => {
  const lines: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
  let queued = 0;
  const events = new WebhookEvents(
    {
      enqueueForTenant: async () => {
        throw new Error('database unreachable');
      },
      enqueueForAccount: async () => 1,
      tenantsWithLoginHooks: async () => {
        throw new Error('database unreachable');
      },
    },
    logger,
  );
  events.onQueued(() => (queued += 1));
  await expect(events.emit('t1', 'account.deleted', { userId: 'x' })).resolves.toBeUndefined();
  expect(queued).toBe(0);
  expect(lines.join('')).toContain('webhook event could not be queued');
  await events.emitForAccount('00000000-0000-4000-8000-000000000000', 'account.locked');
  expect(queued).toBe(1);
  const login = { tenantId: 't1', accountId: null, result: 'success', method: 'otp', clientId: 'c', sourceIp: null };
  await expect(events.fromLoginEvent(login)).resolves.toBeUndefined();
  expect(queued).toBe(1);
});

test('a login costs a webhook statement only in a tenant with a login hook; the list of such tenants is read once per interval, and again after a change here', async () => {
  const calls = { list: 0, enqueued: [] as string[] };
  let tenants = ['t2'];
  const events = new WebhookEvents(
    {
      enqueueForTenant: async () => 0,
      enqueueForAccount: async (accountId) => (calls.enqueued.push(accountId), 1),
      tenantsWithLoginHooks: async () => (calls.list++, tenants),
    },
    pino({ level: 'silent' }),
    60_000,
  );
  const login = (tenantId: string) => ({ tenantId, accountId: '00000000-0000-4000-8000-00000000000a', result: 'success', method: 'otp', clientId: 'c', sourceIp: null });
  await events.fromLoginEvent(login('t1'));
  await events.fromLoginEvent(login('t1'));
  expect(calls).toEqual({ list: 1, enqueued: [] });
  await events.fromLoginEvent(login('t2'));
  expect(calls.enqueued).toHaveLength(1);
  // A hook registered (or deleted) through this instance counts at once.
  tenants = ['t1', 't2'];
  events.hooksChanged();
  await events.fromLoginEvent(login('t1'));
  expect(calls).toEqual({ list: 2, enqueued: [expect.any(String), expect.any(String)] });
});

describe('webhook deliveries across a restart', () => {
  const hooks = receiver();
  // Both instances must open the hook secrets: the same cookie keys, as every process of a deployment has.
  const env = {
    WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true',
    WEBHOOK_RETRY_BASE: '0.2',
    WEBHOOK_RETRY_MAX: '0.5',
    WEBHOOK_MAX_ATTEMPTS: '50',
    WEBHOOK_POLL_INTERVAL: '0.2',
    COOKIE_KEYS: 'restart-test-cookie-key-0123456789abcdef',
    OTP_HMAC_KEY: 'restart-test-otp-key-0123456789abcdef',
  };

  afterAll(async () => {
    await hooks.stop();
  });

  test('a delivery that failed before the provider stopped goes out after it starts again', async () => {
    await hooks.start();
    await hooks.stop();
    const db = await createTestDatabase('hooks');
    try {
      const first = await startTestServer({ databaseUrl: db.url, env });
      let hookId: string;
      let secret: string;
      let eventId: string;
      try {
        const config = await discover(first.issuer, T1.id, T1.secret);
        const tok = (await oidc.clientCredentialsGrant(config, { scope: 'management' })).access_token;
        const post = async (path: string, body?: unknown) => {
          const res = await fetch(new URL(path, first.issuer), {
            method: 'POST',
            headers: { authorization: `Bearer ${tok}`, ...(body ? { 'content-type': 'application/json' } : {}) },
            body: body ? JSON.stringify(body) : undefined,
          });
          return (await res.json()) as Json;
        };
        ({ id: hookId, secret } = (await post(`${API}/webhooks`, { url: hooks.url('/restart') })) as { id: string; secret: string });
        eventId = (await post(`${API}/webhooks/${hookId}/test`)).eventId as string;
        await until('a failed attempt', async () => {
          const d = await first.db.prisma.webhookDelivery.findFirst({ where: { eventId }, include: { attemptLog: true } });
          return d && d.attemptLog.length > 0 ? d : undefined;
        });
      } finally {
        await first.close();
      }
      await hooks.start();
      const second = await startTestServer({ databaseUrl: db.url, env });
      try {
        const got = await until('the event after the restart', () => hooks.received.find((r) => r.body.id === eventId));
        expect(receiverVerifies(secret, got.raw, got.headers['anshin-signature'] as string)).toBe(true);
        const d = await until('the delivery to be logged as delivered', async () => {
          const x = await second.db.prisma.webhookDelivery.findFirst({ where: { eventId }, include: { attemptLog: { orderBy: { number: 'asc' } } } });
          return x?.status === 'delivered' ? x : undefined;
        });
        expect(d.attemptLog[0]).toMatchObject({ number: 1, statusCode: null });
        expect(d.attemptLog.at(-1)).toMatchObject({ statusCode: 200, error: null });
      } finally {
        await second.close();
      }
    } finally {
      await db.drop();
    }
  });
});
