import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as oidc from 'openid-client';
import { startTestServer, TEST_TENANTS_YAML, uniqueUser, type TestServer } from '../support/harness.js';
import { discover } from '../support/browser-less.js';
import { runAdminCli } from '../support/admin-cli.js';

const API = '/api/v1';
const T1 = { id: 'backoffice-t1', secret: 'backoffice-t1-secret-0123456789' };
const T2 = { id: 'backoffice-t2', secret: 'backoffice-t2-secret-0123456789' };

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('audit trail of staff actions (management API and CLI)', () => {
  let s: TestServer;
  let t1: string;
  let t2: string;
  let dir: string;

  async function token(client: { id: string; secret: string }): Promise<string> {
    const config = await discover(s.issuer, client.id, client.secret);
    return (await oidc.clientCredentialsGrant(config, { scope: 'management' })).access_token;
  }

  async function call(method: string, path: string, opts: { token: string; body?: unknown; headers?: Record<string, string> }) {
    const headers: Record<string, string> = { authorization: `Bearer ${opts.token}`, ...opts.headers };
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(new URL(path, s.issuer), { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
    const text = await res.text();
    return { status: res.status, headers: res.headers, text, body: (text && /json/.test(res.headers.get('content-type') ?? '') && !/ndjson/.test(res.headers.get('content-type') ?? '') ? JSON.parse(text) : {}) as Json };
  }

  const audit = async (query: string, tok = t1) => {
    const res = await call('GET', `${API}/audit?${query}`, { token: tok });
    if (res.status !== 200) throw new Error(`GET /audit?${query}: ${res.status} ${res.text}`);
    return res.body as { items: Json[]; nextCursor: string | null; links: { self: string; next?: string } };
  };

  beforeAll(async () => {
    // Webhooks to a loopback receiver (nothing listens there: only the trail matters here).
    s = await startTestServer({ env: { WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true' } });
    [t1, t2] = await Promise.all([token(T1), token(T2)]);
    dir = mkdtempSync(join(tmpdir(), 'audit-test-'));
  });
  afterAll(async () => {
    await s?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('every account change through the API is recorded with actor, source IP, request id and the state before and after', async () => {
    const u = uniqueUser('aud');
    const created = await call('POST', `${API}/accounts`, { token: t1, body: { userId: u.userId, devices: [{ email: u.email, kind: 'pc' }] }, headers: { 'x-request-id': 'req-create-1' } });
    expect(created.status).toBe(201);
    const otp = created.body.activation.otp as string;
    const changed = await call('PATCH', `${API}/accounts/${u.userId}`, { token: t1, body: { devices: [{ email: `new-${u.email}`, kind: 'smartphone' }] }, headers: { 'x-request-id': 'req-patch-1' } });
    expect(changed.status).toBe(200);
    // A lock taken by wrong answers (here set directly), lifted by the back office.
    await s.db.prisma.account.update({ where: { tenantId_userId: { tenantId: 't1', userId: u.userId } }, data: { lockedAt: new Date(), failedAttempts: 5 } });
    expect((await call('POST', `${API}/accounts/${u.userId}/unlock`, { token: t1 })).status).toBe(200);
    const reissued = await call('POST', `${API}/accounts/${u.userId}/activation`, { token: t1 });
    expect(reissued.status).toBe(200);
    expect((await call('DELETE', `${API}/accounts/${u.userId}`, { token: t1 })).status).toBe(204);

    const { items } = await audit(`user_id=${encodeURIComponent(u.userId)}`);
    // Newest first; the record of a deleted account stays.
    expect(items.map((r) => r.action)).toEqual(['account.deleted', 'account.activation_issued', 'account.unlocked', 'account.updated', 'account.created']);
    for (const r of items) {
      expect(r).toMatchObject({ tenant: 't1', userId: u.userId, actor: { kind: 'api', id: 'backoffice-t1' } });
      expect(r.sourceIp).toMatch(/^(127\.0\.0\.1|::1)$/);
      expect(r.requestId).toMatch(/^[A-Za-z0-9._-]+$/);
    }
    const [deleted, , unlocked, updated, create] = items as [Json, Json, Json, Json, Json];
    expect(create.requestId).toBe('req-create-1');
    expect(create.before).toBeNull();
    expect(create.after).toEqual({ status: 'pending_activation', locked: false, lockedUntil: null, failedAttempts: 0, loginMethod: 'otp', role: null, devices: [{ number: 1, email: u.email, kind: 'pc', verified: true }] });
    expect(updated.requestId).toBe('req-patch-1');
    expect(updated.before.devices).toEqual([{ number: 1, email: u.email, kind: 'pc', verified: true }]);
    expect(updated.after.devices).toEqual([{ number: 1, email: `new-${u.email}`, kind: 'smartphone', verified: true }]);
    expect(unlocked.before).toMatchObject({ locked: true, failedAttempts: 5 });
    expect(unlocked.after).toMatchObject({ locked: false, failedAttempts: 0 });
    expect(deleted.before).toMatchObject({ status: 'pending_activation' });
    expect(deleted.after).toBeNull();
    // Never a code, a hash or a secret.
    const all = JSON.stringify(items);
    expect(all).not.toContain(otp);
    expect(all).not.toContain(reissued.body.otp as string);
    expect(all).not.toMatch(/"[^"]*(hash|secret|code|otp|answer|password)[^"]*":/i);
    // Reads are not changes and leave no record.
    await call('GET', `${API}/accounts`, { token: t1 });
    expect((await audit(`user_id=${encodeURIComponent(u.userId)}`)).items).toHaveLength(5);
  });

  test('filters by action, actor and time range; pages with a cursor without repeating or skipping', async () => {
    const started = new Date();
    const users = Array.from({ length: 5 }, () => uniqueUser('page'));
    for (const u of users) expect((await call('POST', `${API}/accounts`, { token: t1, body: { userId: u.userId, devices: [{ email: u.email }] } })).status).toBe(201);
    for (const u of users.slice(0, 2)) expect((await call('POST', `${API}/accounts/${u.userId}/unlock`, { token: t1 })).status).toBe(200);

    const since = `since=${encodeURIComponent(started.toISOString())}`;
    const unlocks = await audit(`${since}&action=account.unlocked`);
    expect(unlocks.items.map((r) => r.userId)).toEqual([users[1]!.userId, users[0]!.userId]);
    expect((await audit(`${since}&actor_kind=cli`)).items).toEqual([]);
    expect((await audit(`${since}&actor_id=backoffice-t1`)).items).toHaveLength(7);
    // A window that ends when this test began holds none of its records.
    const earlier = await audit(`since=${encodeURIComponent(new Date(started.getTime() - 3_600_000).toISOString())}&until=${encodeURIComponent(started.toISOString())}&limit=100`);
    expect(earlier.items.filter((r) => users.some((u) => u.userId === r.userId))).toEqual([]);
    const bounded = await audit(`${since}&until=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}&limit=100`);
    expect(bounded.items).toHaveLength(7);

    const seen: string[] = [];
    let page = await audit(`${since}&limit=3`);
    for (;;) {
      seen.push(...page.items.map((r) => r.id as string));
      if (!page.nextCursor) break;
      expect(page.links.next).toContain(`cursor=${page.nextCursor}`);
      page = await audit(`${since}&limit=3&cursor=${page.nextCursor}`);
    }
    expect(seen).toHaveLength(7);
    expect(new Set(seen).size).toBe(7);
    const whole = await audit(`${since}&limit=100`);
    expect(whole.items.map((r) => r.id)).toEqual(seen);
    const times = whole.items.map((r) => Date.parse(r.createdAt as string));
    expect([...times].sort((a, b) => b - a)).toEqual(times);

    const bad = await call('GET', `${API}/audit?cursor=nonsense`, { token: t1 });
    expect(bad.status).toBe(400);
    expect(bad.body.errors).toEqual([{ field: 'cursor', message: expect.any(String) }]);
    expect((await call('GET', `${API}/audit?action=account.exploded`, { token: t1 })).status).toBe(400);
  });

  test('exports the filtered trail as streamed JSON Lines, by Accept header or ?format=jsonl', async () => {
    const u = uniqueUser('exp');
    expect((await call('POST', `${API}/accounts`, { token: t1, body: { userId: u.userId, devices: [{ email: u.email }] } })).status).toBe(201);
    expect((await call('POST', `${API}/accounts/${u.userId}/unlock`, { token: t1 })).status).toBe(200);
    const listed = (await audit(`user_id=${u.userId}`)).items;

    for (const [query, headers] of [[`user_id=${u.userId}`, { accept: 'application/x-ndjson' }], [`user_id=${u.userId}&format=jsonl`, {}]] as const) {
      const res = await call('GET', `${API}/audit/export?${query}`, { token: t1, headers });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^application\/x-ndjson/);
      expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="audit-t1-\d{4}-\d{2}-\d{2}\.jsonl"$/);
      expect(res.text.endsWith('\n')).toBe(true);
      const lines = res.text.trimEnd().split('\n').map((l) => JSON.parse(l) as Json);
      expect(lines).toEqual(listed);
    }
    // The whole tenant's trail, more than one batch's worth is not needed to prove the stream: every record of t1 is there.
    const everything = await call('GET', `${API}/audit/export`, { token: t1, headers: { accept: 'application/x-ndjson' } });
    const ids = everything.text.trimEnd().split('\n').map((l) => (JSON.parse(l) as Json).id);
    expect(ids).toEqual(expect.arrayContaining(listed.map((r) => r.id)));
    expect(everything.text).not.toContain('"tenant":"t2"');
  });

  test("another tenant's token sees nothing of this tenant's trail", async () => {
    const u = uniqueUser('iso');
    expect((await call('POST', `${API}/accounts`, { token: t1, body: { userId: u.userId, devices: [{ email: u.email }] } })).status).toBe(201);
    expect((await audit(`user_id=${u.userId}`)).items).toHaveLength(1);
    expect((await audit(`user_id=${u.userId}`, t2)).items).toEqual([]);
    expect((await audit('actor_id=backoffice-t1', t2)).items).toEqual([]);
    const exported = await call('GET', `${API}/audit/export?user_id=${u.userId}`, { token: t2, headers: { accept: 'application/x-ndjson' } });
    expect(exported.status).toBe(200);
    expect(exported.text).toBe('');
  });

  test('refused staff actions (validation, not found, conflict) are recorded with outcome "refused" and the error code; reads are not', async () => {
    const u = uniqueUser('ref');
    const created = await call('POST', `${API}/accounts`, { token: t1, body: { userId: u.userId, devices: [{ email: u.email }] } });
    expect(created.status).toBe(201);
    expect(created.body).not.toHaveProperty('outcome');
    // A conflict, a validation error, then not-found changes of an account that is gone.
    expect((await call('POST', `${API}/accounts`, { token: t1, body: { userId: u.userId, devices: [{ email: u.email }] }, headers: { 'x-request-id': 'req-dup-1' } })).status).toBe(409);
    expect((await call('PATCH', `${API}/accounts/${u.userId}`, { token: t1, body: { loginMethod: 'carrier-pigeon' } })).status).toBe(400);
    expect((await call('DELETE', `${API}/accounts/${u.userId}`, { token: t1 })).status).toBe(204);
    expect((await call('POST', `${API}/accounts/${u.userId}/unlock`, { token: t1 })).status).toBe(404);
    expect((await call('POST', `${API}/accounts/${u.userId}/activation`, { token: t1 })).status).toBe(404);
    // Reads of it are not recorded, refused or not.
    expect((await call('GET', `${API}/accounts/${u.userId}`, { token: t1 })).status).toBe(404);
    expect((await call('GET', `${API}/accounts/${u.userId}/login-events`, { token: t1 })).status).toBe(404);

    const { items } = await audit(`user_id=${u.userId}`);
    expect(items.map((r) => [r.action, r.outcome, r.error])).toEqual([
      ['account.activation_issued', 'refused', 'account_not_found'],
      ['account.unlocked', 'refused', 'account_not_found'],
      ['account.deleted', 'done', null],
      ['account.updated', 'refused', 'validation_failed'],
      ['account.created', 'refused', 'account_exists'],
      ['account.created', 'done', null],
    ]);
    const dup = items[4]!;
    expect(dup).toMatchObject({ actor: { kind: 'api', id: 'backoffice-t1' }, requestId: 'req-dup-1', before: null, after: null });
    expect(dup.sourceIp).toMatch(/^(127\.0\.0\.1|::1)$/);
    // The filter picks the attempts out.
    expect((await audit(`user_id=${u.userId}&outcome=refused`)).items).toHaveLength(4);
    expect((await audit(`user_id=${u.userId}&outcome=done`)).items.map((r) => r.action)).toEqual(['account.deleted', 'account.created']);

    // Another tenant's attempt on this account is recorded in that tenant's trail, not in this one's.
    expect((await call('DELETE', `${API}/accounts/${u.userId}`, { token: t2 })).status).toBe(404);
    expect((await audit(`user_id=${u.userId}`)).items).toHaveLength(6);
    expect((await audit(`user_id=${u.userId}`, t2)).items.map((r) => [r.tenant, r.action, r.outcome, r.error])).toEqual([['t2', 'account.deleted', 'refused', 'account_not_found']]);
  });

  test('a role given or taken through the API shows in the states before and after', async () => {
    const u = uniqueUser('role');
    expect((await call('POST', `${API}/accounts`, { token: t1, body: { userId: u.userId, devices: [{ email: u.email }] } })).status).toBe(201);
    expect((await call('PATCH', `${API}/accounts/${u.userId}`, { token: t1, body: { role: 'support' } })).status).toBe(200);
    expect((await call('PATCH', `${API}/accounts/${u.userId}`, { token: t1, body: { role: null } })).status).toBe(200);
    const { items } = await audit(`user_id=${u.userId}&action=account.updated`);
    expect(items.map((r) => [(r.before as { role: unknown }).role, (r.after as { role: unknown }).role])).toEqual([
      ['support', null],
      [null, 'support'],
    ]);
  });

  test('webhook changes through the API are recorded with the hook before and after, never its secret; refused ones too', async () => {
    const created = await call('POST', `${API}/webhooks`, { token: t1, body: { url: 'http://127.0.0.1:9/audit-hook', events: ['account.locked'] }, headers: { 'x-request-id': 'req-hook-1' } });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    const secret = created.body.secret as string;
    expect((await call('PATCH', `${API}/webhooks/${id}`, { token: t1, body: { description: 'ops', enabled: false } })).status).toBe(200);
    expect((await call('POST', `${API}/webhooks/${id}/rotate-secret`, { token: t1, body: { graceSeconds: 0 } })).status).toBe(200);
    expect((await call('POST', `${API}/webhooks/${id}/test`, { token: t1 })).status).toBe(202);
    // Another tenant's attempt: a 404, recorded as refused in that tenant's trail only.
    expect((await call('DELETE', `${API}/webhooks/${id}`, { token: t2 })).status).toBe(404);
    expect((await call('DELETE', `${API}/webhooks/${id}`, { token: t1 })).status).toBe(204);

    const { items } = await audit('actor_kind=api&limit=100');
    const mine = items.filter((r) => String(r.action).startsWith('webhook.') && JSON.stringify(r).includes(id));
    expect(mine.map((r) => [r.action, r.outcome])).toEqual([
      ['webhook.deleted', 'done'],
      ['webhook.tested', 'done'],
      ['webhook.secret_rotated', 'done'],
      ['webhook.updated', 'done'],
      ['webhook.registered', 'done'],
    ]);
    const [deleted, , , updated, registered] = mine;
    expect(registered).toMatchObject({ actor: { kind: 'api', id: 'backoffice-t1' }, requestId: 'req-hook-1', userId: null, before: null, after: { id, url: 'http://127.0.0.1:9/audit-hook', events: ['account.locked'], enabled: true, description: null } });
    expect(updated).toMatchObject({ before: { enabled: true, description: null }, after: { enabled: false, description: 'ops' } });
    expect(deleted).toMatchObject({ before: { id }, after: null });
    for (const r of mine) expect(JSON.stringify(r)).not.toContain(secret.slice(6));
    const refused = (await audit('action=webhook.deleted&outcome=refused', t2)).items;
    expect(refused.map((r) => [r.tenant, r.action, r.error])).toEqual([['t2', 'webhook.deleted', 'webhook_not_found']]);
  });

  test('CLI actions are recorded with the operator as actor', async () => {
    const u = uniqueUser('cli');
    expect((await call('POST', `${API}/accounts`, { token: t1, body: { userId: u.userId, devices: [{ email: u.email }] } })).status).toBe(201);
    const tenantsFile = join(dir, 'tenants.yaml');
    writeFileSync(tenantsFile, TEST_TENANTS_YAML);
    const r = await runAdminCli({ DATABASE_URL: s.config.databaseUrl!, TENANTS_FILE: tenantsFile, SMTP_URL: s.smtp.url }, ['unlock', 't1', u.userId, '--json']);
    expect([r.code, r.err]).toEqual([0, '']);
    // (delete loads oidc-provider, which warns about the runtime on stderr)
    const d = await runAdminCli({ DATABASE_URL: s.config.databaseUrl!, TENANTS_FILE: tenantsFile, SMTP_URL: s.smtp.url }, ['delete', 't1', u.userId, '--yes']);
    expect([d.code, d.err.replace(/^oidc-provider WARNING: Unsupported runtime.*\n/, '')]).toEqual([0, '']);
    const { items } = await audit(`user_id=${u.userId}&actor_kind=cli`);
    expect(items.map((x) => x.action)).toEqual(['account.deleted', 'account.unlocked']);
    for (const x of items) {
      expect(x.actor.id).toMatch(/^[^@\s]+@\S+$/);
      expect(x.sourceIp).toBeNull();
    }
    expect(items[0]!.after).toBeNull();
    expect(items[0]!.before).toMatchObject({ loginMethod: 'otp', devices: [{ email: u.email }] });
  });
});
