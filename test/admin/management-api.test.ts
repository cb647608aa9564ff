import * as oidc from 'openid-client';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { REDIRECT_URI, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { discover, followToCallback, startLogin, submit } from '../support/browser-less.js';

// ajv-formats is CommonJS: under ESM its default export is module.exports, whose `default` is the plugin.
const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule) as unknown as (ajv: Ajv2020) => void;

const API = '/api/v1';
const T1 = { id: 'backoffice-t1', secret: 'backoffice-t1-secret-0123456789' };
const T2 = { id: 'backoffice-t2', secret: 'backoffice-t2-secret-0123456789' };

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

interface OpenApiDoc {
  paths: Record<string, Record<string, { responses: Record<string, Json> } | unknown>>;
  components: { responses: Record<string, Json> };
}

interface ApiResponse {
  status: number;
  headers: Headers;
  body: Json;
}

describe('management API (/api/v1)', () => {
  let s: TestServer;
  let doc: OpenApiDoc;
  let ajv: Ajv2020;
  let t1: string;
  let t2: string;
  /** `METHOD /template` of every call, to prove each documented operation was exercised. */
  const exercised = new Set<string>();

  const pointer = (...segments: string[]) => '#' + segments.map((p) => '/' + encodeURIComponent(p.replace(/~/g, '~0').replace(/\//g, '~1'))).join('');

  /** Checks one response against the OpenAPI document: documented status, media type, headers, schema. */
  function conform(method: string, path: string, res: ApiResponse, contentType: string | null) {
    const bare = path.split('?')[0]!.slice(API.length);
    const template = Object.keys(doc.paths).find((t) => new RegExp(`^${t.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(bare));
    if (!template) throw new Error(`${method} ${path}: path not in the OpenAPI document`);
    const op = doc.paths[template]![method.toLowerCase()] as { responses: Record<string, Json> } | undefined;
    if (!op) throw new Error(`${method} ${template}: operation not in the OpenAPI document`);
    exercised.add(`${method} ${template}`);
    let response = op.responses[String(res.status)];
    let responsePointer = pointer('paths', template, method.toLowerCase(), 'responses', String(res.status));
    if (!response) throw new Error(`${method} ${template} answered ${res.status}, which is not documented`);
    if (typeof response.$ref === 'string') {
      const name = (response.$ref as string).split('/').at(-1)!;
      response = doc.components.responses[name]!;
      responsePointer = pointer('components', 'responses', name);
    }
    for (const header of Object.keys((response.headers as Json | undefined) ?? {})) {
      if (!res.headers.get(header)) throw new Error(`${method} ${template} ${res.status}: header ${header} missing`);
    }
    const content = response.content as Json | undefined;
    if (!content) {
      expect(contentType).toBeNull();
      return;
    }
    const mediaType = (contentType ?? '').split(';')[0]!.trim();
    if (!content[mediaType]) throw new Error(`${method} ${template} ${res.status}: media type ${mediaType} not documented`);
    const validate = ajv.getSchema(`api${responsePointer}${pointer('content', mediaType, 'schema').slice(1)}`);
    if (!validate) throw new Error(`no schema for ${method} ${template} ${res.status}`);
    if (!validate(res.body)) throw new Error(`${method} ${path} ${res.status} does not match the document: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(res.body)}`);
  }

  async function call(
    method: string,
    path: string,
    opts: { token?: string | null; body?: unknown; raw?: string; contentType?: string; headers?: Record<string, string> } = {},
  ): Promise<ApiResponse> {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    let body: string | undefined;
    if (opts.raw !== undefined) body = opts.raw;
    else if (opts.body !== undefined) body = JSON.stringify(opts.body);
    if (body !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
    const res = await fetch(new URL(path, s.issuer), { method, headers, body, redirect: 'manual' });
    const text = await res.text();
    const contentType = res.headers.get('content-type');
    const out: ApiResponse = { status: res.status, headers: res.headers, body: text && /json/.test(contentType ?? '') ? (JSON.parse(text) as Json) : {} };
    if (!text) expect(res.status).toBe(204);
    conform(method, path, out, text ? contentType : null);
    return out;
  }

  async function token(client: { id: string; secret: string }, scope: string | null = 'management'): Promise<string> {
    const config = await discover(s.issuer, client.id, client.secret);
    const tokens = await oidc.clientCredentialsGrant(config, scope ? { scope } : {});
    return tokens.access_token;
  }

  /** Creates an account through the API; returns the response body. */
  async function create(tok: string, extra: Json = {}) {
    const u = uniqueUser('api');
    const res = await call('POST', `${API}/accounts`, { token: tok, body: { userId: u.userId, devices: [{ email: u.email, kind: 'smartphone' }], ...extra } });
    expect(res.status).toBe(201);
    return { ...u, body: res.body, res };
  }

  const accountPath = (userId: string) => `${API}/accounts/${encodeURIComponent(userId)}`;
  const dbAccount = (tenantId: string, userId: string) => s.db.prisma.account.findUnique({ where: { tenantId_userId: { tenantId, userId } }, include: { devices: true } });

  beforeAll(async () => {
    // Webhooks to 127.0.0.1 are registered below (no receiver needed: only the API's answers are checked).
    s = await startTestServer({ env: { WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true' } });
    ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats(ajv);
    const res = await fetch(new URL(`${API}/openapi.json`, s.issuer));
    expect(res.status).toBe(200);
    doc = (await res.json()) as OpenApiDoc;
    ajv.addSchema(doc as object, 'api');
    // The document itself is a served response too.
    conform('GET', `${API}/openapi.json`, { status: 200, headers: res.headers, body: doc as Json }, res.headers.get('content-type'));
    [t1, t2] = await Promise.all([token(T1), token(T2)]);
  });
  afterAll(async () => {
    await s?.close();
  });

  test('the token endpoint issues a 10-minute management token only to back-office clients', async () => {
    const config = await discover(s.issuer, T1.id, T1.secret);
    const tokens = await oidc.clientCredentialsGrant(config, { scope: 'management' });
    expect(tokens.scope).toBe('management');
    expect(tokens.expires_in).toBe(600);
    // A relying site is not allowed the grant, so it can never reach the API.
    const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    await expect(oidc.clientCredentialsGrant(rp, { scope: 'management' })).rejects.toMatchObject({ error_description: 'requested grant type is not allowed for this client' });
    // Nor can it ask for the scope at the authorization endpoint.
    const url = oidc.buildAuthorizationUrl(rp, { redirect_uri: REDIRECT_URI, scope: 'openid management', code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' });
    const refused = await fetch(url, { redirect: 'manual' });
    expect(new URL(refused.headers.get('location')!).searchParams.get('error')).toBe('invalid_scope');
  });

  test('POST /accounts creates an account waiting for activation and returns its activation code', async () => {
    const { userId, email, body, res } = await create(t1);
    expect(res.headers.get('location')).toBe(accountPath(userId));
    expect(body).toMatchObject({ tenant: 't1', userId, status: 'pending_activation', loginMethod: 'otp', failedAttempts: 0, lockedAt: null, activatedAt: null });
    expect(body.devices).toEqual([{ number: 1, email, kind: 'smartphone', verified: true }]);
    expect(body.activation.url).toBe(`${s.issuer}/activation/t1?user=${encodeURIComponent(userId)}`);
    expect(body.activation.otp).toMatch(/^\d{8}$/);
    expect(body.activation.mailed).toBe(false);
    expect(new Date(body.activation.expiresAt).getTime()).toBeGreaterThan(Date.now() + 24 * 3600 * 1000);
    // The code handed out really activates this account.
    expect(await s.app.services.activation.verify('t1', userId, body.activation.otp)).toMatchObject({ ok: true });
    const row = await dbAccount('t1', userId);
    expect(row).toMatchObject({ status: 'pending_activation', loginMethod: 'otp' });
    const events = await s.db.prisma.accountEvent.findMany({ where: { accountId: row!.id } });
    expect(events.map((e) => e.type).sort()).toEqual(['activation_issued', 'created']);

    const got = await call('GET', res.headers.get('location')!, { token: t1 });
    expect(got.status).toBe(200);
    const { activation: _activation, ...view } = body;
    expect(got.body).toEqual(view);
  });

  test('sendActivation mails the activation URL and code to the devices and leaves the code out of the response', async () => {
    const before = s.smtp.messages.length;
    const u = uniqueUser('mail');
    const res = await call('POST', `${API}/accounts`, {
      token: t1,
      body: { userId: u.userId, devices: [{ email: u.email }, { email: `2-${u.email}`, kind: 'mobile' }], sendActivation: true },
    });
    expect(res.status).toBe(201);
    expect(res.body.activation.otp).toBeUndefined();
    expect(res.body.activation.mailed).toBe(true);
    const otp = await s.smtp.otpFor(u.email, before);
    const mail = s.smtp.messages.slice(before).find((m) => m.to.includes(u.email))!;
    expect(mail.subject).toContain('初回認証');
    expect(mail.to).toContain(`2-${u.email}`);
    expect(mail.text).toContain(res.body.activation.url);
    expect(await s.app.services.activation.verify('t1', u.userId, otp)).toMatchObject({ ok: true });
  });

  test('creating an existing user ID is a 409 and changes nothing; the same ID in another tenant is another account', async () => {
    const { userId, body } = await create(t1);
    const again = await call('POST', `${API}/accounts`, { token: t1, body: { userId, devices: [{ email: 'other@example.test' }] } });
    expect(again.status).toBe(409);
    expect(again.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(again.body).toMatchObject({ type: 'urn:anshin-login:problem:account_exists', status: 409, detail: 'このユーザIDは既に登録されています。' });
    expect((await dbAccount('t1', userId))!.devices.map((d) => d.email)).toEqual([body.devices[0].email]);
    expect(await s.db.prisma.account.count({ where: { userId } })).toBe(1);

    const elsewhere = await call('POST', `${API}/accounts`, { token: t2, body: { userId, devices: [{ email: 'other@example.test' }] } });
    expect(elsewhere.status).toBe(201);
    expect(elsewhere.body.tenant).toBe('t2');
    expect(await s.db.prisma.account.count({ where: { userId } })).toBe(2);
  });

  test('GET /accounts pages through the tenant\'s accounts only, with total and links, filtered by status', async () => {
    const mine = [await create(t2), await create(t2), await create(t2)];
    const locked = mine[1]!;
    await s.db.prisma.account.updateMany({ where: { tenantId: 't2', userId: locked.userId }, data: { lockedAt: new Date(), failedAttempts: 5 } });
    const total = await s.db.prisma.account.count({ where: { tenantId: 't2' } });

    const page1 = await call('GET', `${API}/accounts?per_page=2`, { token: t2 });
    expect(page1.status).toBe(200);
    expect(page1.body).toMatchObject({ page: 1, perPage: 2, total });
    expect(page1.body.items).toHaveLength(2);
    expect(page1.body.items.every((a: Json) => a.tenant === 't2')).toBe(true);
    expect(page1.body.links).toMatchObject({ self: `${API}/accounts?page=1&per_page=2`, first: `${API}/accounts?page=1&per_page=2`, next: `${API}/accounts?page=2&per_page=2` });
    expect(page1.body.links.prev).toBeUndefined();
    const last = await call('GET', page1.body.links.last, { token: t2 });
    expect(last.body.links.next).toBeUndefined();
    expect(last.body.links.prev).toBeDefined();

    // Every account of t2 is seen exactly once across the pages, none of t1.
    const seen: string[] = [];
    for (let link: string | undefined = page1.body.links.first; link; ) {
      const page = await call('GET', link, { token: t2 });
      seen.push(...page.body.items.map((a: Json) => a.userId as string));
      link = page.body.links.next;
    }
    expect(seen).toHaveLength(total);
    for (const m of mine) expect(seen).toContain(m.userId);
    const fromT1 = await call('GET', `${API}/accounts?per_page=100`, { token: t1 });
    for (const m of mine) expect(fromT1.body.items.map((a: Json) => a.userId)).not.toContain(m.userId);

    const lockedOnly = await call('GET', `${API}/accounts?status=locked`, { token: t2 });
    expect(lockedOnly.body.items.map((a: Json) => a.userId)).toEqual([locked.userId]);
    expect(lockedOnly.body.items[0].status).toBe('locked');
    expect(lockedOnly.body.links.self).toBe(`${API}/accounts?status=locked&page=1&per_page=20`);
    const pending = await call('GET', `${API}/accounts?status=pending_activation&per_page=100`, { token: t2 });
    expect(pending.body.items.map((a: Json) => a.userId)).not.toContain(locked.userId);
    expect(pending.body.total).toBe(total - 1);
  });

  test('PATCH /accounts/{userId} replaces devices and changes the login method within the contract', async () => {
    const { userId } = await create(t1);
    const res = await call('PATCH', accountPath(userId), { token: t1, body: { devices: [{ email: 'new-a@example.test', kind: 'pc' }, { email: 'new-b@example.test', kind: 'mobile' }] } });
    expect(res.status).toBe(200);
    expect(res.body.devices.map((d: Json) => [d.number, d.email, d.kind])).toEqual([
      [1, 'new-a@example.test', 'pc'],
      [2, 'new-b@example.test', 'mobile'],
    ]);
    expect((await dbAccount('t1', userId))!.devices).toHaveLength(2);
    const same = await call('PATCH', accountPath(userId), { token: t1, body: { loginMethod: 'otp' } });
    expect(same.status).toBe(200);
    // t1's contract only allows otp.
    const refused = await call('PATCH', accountPath(userId), { token: t1, body: { loginMethod: 'password' } });
    expect(refused.status).toBe(400);
    expect(refused.body.errors).toEqual([{ field: 'loginMethod', message: 'ログイン方法「password」はご契約の内容で許可されていません。' }]);
    const empty = await call('PATCH', accountPath(userId), { token: t1, body: {} });
    expect(empty.status).toBe(400);
    expect(empty.body.errors[0].field).toBe('body');
    const types = (await s.db.prisma.accountEvent.findMany({ where: { account: { userId, tenantId: 't1' } } })).map((e) => e.type);
    expect(types.filter((t) => t === 'updated')).toHaveLength(2);
  });

  test('PATCH /accounts/{userId} with role makes an account staff of the support console, and null makes it ordinary again', async () => {
    const { userId, body } = await create(t1);
    expect(body.role).toBeNull();
    const support = await call('PATCH', accountPath(userId), { token: t1, body: { role: 'support' } });
    expect(support.status).toBe(200);
    expect(support.body.role).toBe('support');
    expect((await call('GET', accountPath(userId), { token: t1 })).body.role).toBe('support');
    expect((await dbAccount('t1', userId))!.role).toBe('support');
    const admin = await call('PATCH', accountPath(userId), { token: t1, body: { role: 'admin' } });
    expect(admin.body.role).toBe('admin');
    const unknown = await call('PATCH', accountPath(userId), { token: t1, body: { role: 'owner' } });
    expect(unknown.status).toBe(400);
    expect(unknown.body.errors[0].field).toBe('role');
    expect((await dbAccount('t1', userId))!.role).toBe('admin');
    // Another tenant's back office cannot make anyone here staff.
    expect((await call('PATCH', accountPath(userId), { token: t2, body: { role: 'support' } })).status).toBe(404);
    const cleared = await call('PATCH', accountPath(userId), { token: t1, body: { role: null } });
    expect(cleared.body.role).toBeNull();
    expect((await dbAccount('t1', userId))!.role).toBeNull();
    const events = await s.db.prisma.accountEvent.findMany({ where: { account: { userId, tenantId: 't1' }, type: 'updated' }, orderBy: { createdAt: 'asc' } });
    expect(events.map((e) => (e.detail as { role?: string | null }).role)).toEqual(['support', 'admin', null]);
  });

  test('POST /accounts/{userId}/activation issues a fresh code and retires the old one; send mails it', async () => {
    const { userId, email, body } = await create(t1);
    const fresh = await call('POST', `${accountPath(userId)}/activation`, { token: t1, body: { send: false } });
    expect(fresh.status).toBe(200);
    expect(fresh.body.otp).toMatch(/^\d{8}$/);
    expect(fresh.body.otp).not.toBe(body.activation.otp);
    expect(await s.app.services.activation.verify('t1', userId, body.activation.otp)).toMatchObject({ ok: false });
    expect(await s.app.services.activation.verify('t1', userId, fresh.body.otp)).toMatchObject({ ok: true });
    // Handed out by the site, not mailed: the user only hears that a new activation exists.
    const notice = await s.smtp.waitFor((m) => m.to.includes(email) && m.subject.includes('再発行'));
    expect(notice.text).not.toContain(fresh.body.otp);

    const before = s.smtp.messages.length;
    const mailed = await call('POST', `${accountPath(userId)}/activation`, { token: t1, body: { send: true, locale: 'en' } });
    expect(mailed.status).toBe(200);
    expect(mailed.body.otp).toBeUndefined();
    const otp = await s.smtp.otpFor(email, before);
    expect(await s.app.services.activation.verify('t1', userId, fresh.body.otp)).toMatchObject({ ok: false });
    expect(await s.app.services.activation.verify('t1', userId, otp)).toMatchObject({ ok: true });
    // No body at all is fine too (send defaults to false).
    const bare = await call('POST', `${accountPath(userId)}/activation`, { token: t1 });
    expect(bare.status).toBe(200);
    expect(bare.body.otp).toMatch(/^\d{8}$/);
  });

  test('POST /accounts/{userId}/unlock clears a lock set in the database and mails the user', async () => {
    const { userId, email } = await create(t1);
    await s.db.prisma.account.updateMany({ where: { tenantId: 't1', userId }, data: { lockedAt: new Date(), failedAttempts: 5 } });
    expect((await call('GET', accountPath(userId), { token: t1 })).body.status).toBe('locked');
    const before = s.smtp.messages.length;
    const res = await call('POST', `${accountPath(userId)}/unlock`, { token: t1 });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'pending_activation', lockedAt: null, failedAttempts: 0 });
    expect(await dbAccount('t1', userId)).toMatchObject({ lockedAt: null, failedAttempts: 0 });
    const mail = await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= before && m.to.includes(email));
    expect(mail.subject).toContain('ロック解除');
    const events = await s.db.prisma.accountEvent.findMany({ where: { account: { userId, tenantId: 't1' }, type: 'unlocked' } });
    expect(events).toHaveLength(1);
  });

  test('GET /accounts/{userId}/login-events pages through the account\'s attempts, newest first', async () => {
    const { userId } = await create(t1);
    const account = (await dbAccount('t1', userId))!;
    // A second apart: events stored within one millisecond have no order of their own.
    const start = Date.now() - 10_000;
    for (const [i, result] of (['wrong_otp', 'wrong_otp', 'success'] as const).entries()) {
      const event = await s.app.services.events.record({ tenantId: 't1', accountId: account.id, submittedUserId: userId, clientId: 'rp-basic', method: 'otp', result, sourceIp: '192.0.2.1', userAgent: 'jest' });
      await s.db.prisma.loginEvent.update({ where: { id: event.id }, data: { createdAt: new Date(start + i * 1000) } });
    }
    const page1 = await call('GET', `${accountPath(userId)}/login-events?per_page=2`, { token: t1 });
    expect(page1.status).toBe(200);
    expect(page1.body.items).toHaveLength(2);
    expect(page1.body.items[0]).toMatchObject({ result: 'success', clientId: 'rp-basic', method: 'otp', sourceIp: '192.0.2.1', userAgent: 'jest' });
    expect(page1.body.links.next).toBe(`${accountPath(userId)}/login-events?page=2&per_page=2`);
    const page2 = await call('GET', page1.body.links.next, { token: t1 });
    expect(page2.body.items.map((e: Json) => e.result)).toEqual(['wrong_otp']);
    expect(page2.body.links.next).toBeUndefined();
    expect(page2.body.links.prev).toBe(`${accountPath(userId)}/login-events?page=1&per_page=2`);
  });

  test('DELETE /accounts/{userId} removes the account with its devices, events, sessions and grants', async () => {
    const { userId, email } = await create(t1);
    const account = (await dbAccount('t1', userId))!;
    // Activate it and sign in for real, so the provider holds a session, a grant and tokens for it.
    await s.app.services.accounts.activate(account.id, { secretQuestionId: 'q1', secretAnswerHash: 'x', passwordHash: null });
    const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const before = s.smtp.messages.length;
    const login = await startLogin(rp, s.issuer);
    expect((await submit(login, 'identify', { userId })).status).toBe(303);
    const otp = await s.smtp.otpFor(email, before);
    const done = await submit(login, 'otp', { otp });
    expect(done.status).toBe(303);
    const callback = await followToCallback(login.agent, done);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    // A user's access token is no management token.
    expect((await call('GET', `${API}/accounts`, { token: tokens.access_token })).status).toBe(401);

    const payloadsOf = async () =>
      (await s.db.prisma.$queryRaw<Array<{ type: string }>>`SELECT type FROM oidc_payloads WHERE payload->>'accountId' = ${account.id}`).map((r) => r.type).sort();
    expect(await payloadsOf()).toEqual(expect.arrayContaining(['Grant', 'Session', 'AccessToken', 'RefreshToken']));
    expect(await s.db.prisma.loginEvent.count({ where: { accountId: account.id } })).toBeGreaterThan(0);
    expect(await s.db.prisma.device.count({ where: { accountId: account.id } })).toBe(1);

    const res = await call('DELETE', accountPath(userId), { token: t1 });
    expect(res.status).toBe(204);
    expect(await s.db.prisma.account.count({ where: { id: account.id } })).toBe(0);
    expect(await s.db.prisma.device.count({ where: { accountId: account.id } })).toBe(0);
    expect(await s.db.prisma.loginEvent.count({ where: { accountId: account.id } })).toBe(0);
    expect(await s.db.prisma.accountEvent.count({ where: { accountId: account.id } })).toBe(0);
    expect(await payloadsOf()).toEqual([]);
    await expect(oidc.fetchUserInfo(rp, tokens.access_token, account.id)).rejects.toBeDefined();

    expect((await call('GET', accountPath(userId), { token: t1 })).status).toBe(404);
    expect((await call('DELETE', accountPath(userId), { token: t1 })).status).toBe(404);
  });

  test("another tenant's token never reaches an account: every operation answers 404 and nothing changes", async () => {
    const { userId } = await create(t1);
    await s.db.prisma.account.updateMany({ where: { tenantId: 't1', userId }, data: { lockedAt: new Date(), failedAttempts: 5 } });
    const path = accountPath(userId);
    const attempts: Array<[string, string, unknown]> = [
      ['GET', path, undefined],
      ['PATCH', path, { devices: [{ email: 'attacker@example.test' }] }],
      ['POST', `${path}/activation`, { send: false }],
      ['POST', `${path}/unlock`, {}],
      ['GET', `${path}/login-events`, undefined],
      ['DELETE', path, undefined],
    ];
    for (const [method, p, body] of attempts) {
      const res = await call(method, p, { token: t2, body });
      expect([method, p, res.status]).toEqual([method, p, 404]);
      expect(res.body).toMatchObject({ type: 'urn:anshin-login:problem:account_not_found', status: 404, detail: 'アカウントが見つかりません。' });
    }
    const row = (await dbAccount('t1', userId))!;
    expect(row.lockedAt).not.toBeNull();
    expect(row.devices.map((d) => d.email)).not.toContain('attacker@example.test');
    expect(await s.db.prisma.oneTimePassword.count({ where: { accountId: row.id } })).toBe(1);
  });

  test('no token, a malformed or unknown token and an expired token are 401 with a Bearer challenge', async () => {
    const none = await call('GET', `${API}/accounts`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer realm="management"');
    expect(none.body).toMatchObject({ type: 'urn:anshin-login:problem:invalid_token', status: 401, title: '認証が必要です' });

    for (const authorization of ['Bearer not-a-real-token-0123456789abcdef', 'Basic YmFja29mZmljZS10MTpzZWNyZXQ=', 'Bearer', `Bearer ${t1}x`]) {
      const res = await call('POST', `${API}/accounts`, { headers: { authorization }, body: { userId: 'x', devices: [{ email: 'x@example.test' }] } });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="management", error="invalid_token"/);
    }

    // Expiry as the database sees it (the row's expiry) and as the token's own exp says.
    const expiring = await token(T1);
    expect((await call('GET', `${API}/accounts`, { token: expiring })).status).toBe(200);
    const row = (await s.db.prisma.oidcPayload.findFirst({ where: { id: expiring, type: 'ClientCredentials' } }))!;
    const past = Math.floor(Date.now() / 1000) - 60;
    await s.db.prisma.oidcPayload.updateMany({ where: { id: expiring, type: 'ClientCredentials' }, data: { payload: { ...(row.payload as Json), exp: past } } });
    const expired = await call('GET', `${API}/accounts`, { token: expiring, headers: { 'accept-language': 'en' } });
    expect(expired.status).toBe(401);
    expect(expired.body.detail).toBe('The access token has expired.');
    expect(expired.headers.get('www-authenticate')).toContain('error_description="The access token has expired."');
    await s.db.prisma.oidcPayload.updateMany({ where: { id: expiring, type: 'ClientCredentials' }, data: { expiresAt: new Date(Date.now() - 1000) } });
    expect((await call('GET', `${API}/accounts`, { token: expiring })).status).toBe(401);

    // The document needs no token.
    expect((await call('GET', `${API}/openapi.json`)).status).toBe(200);
  });

  test('a token without the management scope is 403 insufficient_scope', async () => {
    for (const scope of [null, 'profile']) {
      const tok = await token(T1, scope);
      const res = await call('GET', `${API}/accounts`, { token: tok });
      expect(res.status).toBe(403);
      expect(res.headers.get('www-authenticate')).toMatch(/error="insufficient_scope".*scope="management"/);
      expect(res.body).toMatchObject({ type: 'urn:anshin-login:problem:insufficient_scope', status: 403 });
    }
  });

  test('bad payloads and queries are problem+json 400 naming every field, in Japanese or English', async () => {
    const missing = await call('POST', `${API}/accounts`, { token: t1, body: {} });
    expect(missing.status).toBe(400);
    expect(missing.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(missing.headers.get('content-language')).toBe('ja');
    expect(missing.body).toMatchObject({ type: 'urn:anshin-login:problem:validation_failed', title: 'リクエストの内容に誤りがあります', status: 400 });
    expect(missing.body.errors).toEqual([
      { field: 'userId', message: '必須の項目です。' },
      { field: 'devices', message: '必須の項目です。' },
    ]);

    const typed = await call('POST', `${API}/accounts`, {
      token: t1,
      headers: { 'accept-language': 'en-US,en;q=0.9,ja;q=0.5' },
      body: { userId: 'p-typed', devices: [{ email: 'a@example.test', kind: 'tablet' }], sendActivation: 'yes', sendActivaton: true },
    });
    expect(typed.status).toBe(400);
    expect(typed.headers.get('content-language')).toBe('en');
    expect(typed.body.title).toBe('The request is not valid');
    expect(typed.body.errors).toEqual(
      expect.arrayContaining([
        { field: 'devices[0].kind', message: 'Must be one of: pc, mobile, smartphone' },
        { field: 'sendActivation', message: 'Wrong type (expected boolean).' },
        { field: 'sendActivaton', message: 'This field is not allowed.' },
      ]),
    );
    expect(await dbAccount('t1', 'p-typed')).toBeNull();

    // Rules the account service checks name their field the same way.
    const badEmail = await call('POST', `${API}/accounts`, { token: t1, body: { userId: 'p-bad-email', devices: [{ email: 'ok@example.test' }, { email: 'not-an-address' }] } });
    expect(badEmail.status).toBe(400);
    expect(badEmail.body.errors).toEqual([{ field: 'devices[1].email', message: 'メールアドレスの形式が正しくありません。' }]);
    const badId = await call('POST', `${API}/accounts`, { token: t1, body: { userId: '-leading-dash', devices: [{ email: 'ok@example.test' }] } });
    expect(badId.body.errors[0].field).toBe('userId');
    const tooMany = await call('POST', `${API}/accounts`, { token: t1, body: { userId: 'p-many', devices: Array.from({ length: 6 }, (_, i) => ({ email: `${i}@example.test` })) } });
    expect(tooMany.body.errors).toEqual([{ field: 'devices', message: '登録できる端末は5台までです。' }]);
    const notArray = await call('POST', `${API}/accounts`, { token: t1, raw: '[1,2]' });
    expect(notArray.status).toBe(400);
    expect(notArray.body.errors[0].field).toBe('body');

    const query = await call('GET', `${API}/accounts?per_page=1000&status=bogus&page=0`, { token: t1 });
    expect(query.status).toBe(400);
    expect(query.body.errors.map((e: Json) => e.field).sort()).toEqual(['page', 'per_page', 'status']);
    const events = await call('GET', `${API}/accounts/anyone/login-events?page=x`, { token: t1 });
    expect(events.status).toBe(400);
    expect(events.body.errors[0].field).toBe('page');
    const patch = await call('PATCH', accountPath('anyone'), { token: t1, body: { devices: [] } });
    expect(patch.status).toBe(400);
    expect(patch.body.errors[0]).toEqual({ field: 'devices', message: '1 件以上を指定してください。' });
    const activation = await call('POST', `${API}/accounts/anyone/activation`, { token: t1, body: { send: 1 } });
    expect(activation.body.errors[0].field).toBe('send');
    const unlock = await call('POST', `${API}/accounts/anyone/unlock`, { token: t1, body: { locale: 'fr' } });
    expect(unlock.body.errors[0].field).toBe('locale');
  });

  test('non-JSON bodies are 415, malformed JSON 400, oversized bodies 413; unknown API paths 404 — all problem+json', async () => {
    const form = await call('POST', `${API}/accounts`, { token: t1, raw: 'userId=x&devices=y', contentType: 'application/x-www-form-urlencoded' });
    expect(form.status).toBe(415);
    expect(form.body.type).toBe('urn:anshin-login:problem:unsupported_media_type');
    const text = await call('PATCH', accountPath('anyone'), { token: t1, raw: '{"loginMethod":"otp"}', contentType: 'text/plain' });
    expect(text.status).toBe(415);
    for (const p of [`${API}/accounts/anyone/activation`, `${API}/accounts/anyone/unlock`]) expect((await call('POST', p, { token: t1, raw: 'send=true', contentType: 'application/x-www-form-urlencoded' })).status).toBe(415);

    const malformed = await call('POST', `${API}/accounts`, { token: t1, raw: '{"userId": ', headers: { 'accept-language': 'en' } });
    expect(malformed.status).toBe(400);
    expect(malformed.body).toMatchObject({ type: 'urn:anshin-login:problem:bad_request', detail: 'The request body is not valid JSON.' });

    const huge = await call('POST', `${API}/accounts`, { token: t1, body: { userId: 'p-huge', devices: [{ email: 'a@example.test' }], pad: 'x'.repeat(70_000) } });
    expect(huge.status).toBe(413);
    expect(huge.body.type).toBe('urn:anshin-login:problem:payload_too_large');
    for (const p of [accountPath('anyone'), `${API}/accounts/anyone/activation`, `${API}/accounts/anyone/unlock`])
      expect((await call(p === accountPath('anyone') ? 'PATCH' : 'POST', p, { token: t1, raw: JSON.stringify({ pad: 'x'.repeat(70_000) }) })).status).toBe(413);

    const unknown = await fetch(new URL(`${API}/nothing-here`, s.issuer), { headers: { authorization: `Bearer ${t1}` } });
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  });

  test('a method a path does not have is a 405 problem+json with Allow; unknown API paths are 404 problem+json', async () => {
    const cases: Array<[string, string, string[]]> = [
      ['PUT', `${API}/accounts`, ['GET', 'POST']],
      ['DELETE', `${API}/accounts`, ['GET', 'POST']],
      ['PUT', accountPath('anyone'), ['GET', 'PATCH', 'DELETE']],
      ['POST', accountPath('anyone'), ['GET', 'PATCH', 'DELETE']],
      ['GET', `${API}/accounts/anyone/unlock`, ['POST']],
      ['DELETE', `${API}/openapi.json`, ['GET']],
      ['PROPFIND', `${API}/accounts`, ['GET', 'POST']],
    ];
    for (const [method, path, allowed] of cases) {
      for (const tok of [t1, null]) {
        const res = await fetch(new URL(path, s.issuer), { method, headers: { ...(tok ? { authorization: `Bearer ${tok}` } : {}), 'accept-language': 'en' } });
        expect([method, path, res.status]).toEqual([method, path, 405]);
        expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
        const allow = (res.headers.get('allow') ?? '').split(/, */);
        for (const m of allowed) expect(allow).toContain(m);
        expect(await res.json()).toMatchObject({ type: 'urn:anshin-login:problem:method_not_allowed', status: 405, title: expect.any(String), detail: expect.stringMatching(/\S/) });
      }
    }
    const ja = await fetch(new URL(`${API}/accounts`, s.issuer), { method: 'PUT' });
    expect(((await ja.json()) as Json).detail).toMatch(/[ぁ-んァ-ン]/);
    // Outside the API the same case is a page in the user's language.
    const page = await fetch(new URL('/account/logout', s.issuer), { headers: { accept: 'text/html' } });
    expect(page.status).toBe(405);
    expect(page.headers.get('allow')).toMatch(/POST/);
    expect(await page.text()).toContain('このページではその操作はできません。');

    for (const [method, path] of [['GET', `${API}/nothing-here`], ['POST', `${API}/nothing-here`], ['GET', API], ['GET', `${API}/`], ['DELETE', `${API}/accounts/a/b/c`], ['PUT', `${API}/x`]] as const) {
      const res = await fetch(new URL(path, s.issuer), { method });
      expect([method, path, res.status]).toEqual([method, path, 404]);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(await res.json()).toMatchObject({ type: 'urn:anshin-login:problem:not_found', status: 404 });
    }
  });

  test('the audit trail and webhooks answer as documented (their behaviour: test/admin/audit.test.ts, test/webhooks/)', async () => {
    const { userId } = await create(t1);
    const page = await call('GET', `${API}/audit?user_id=${userId}&limit=1`, { token: t1 });
    expect(page.status).toBe(200);
    expect(page.body.items).toHaveLength(1);
    expect((await call('GET', `${API}/audit?since=yesterday`, { token: t1 })).status).toBe(400);
    expect((await call('GET', `${API}/audit`, { token: null })).status).toBe(401);

    const exportPath = `${API}/audit/export?user_id=${userId}`;
    const exported = await fetch(new URL(exportPath, s.issuer), { headers: { authorization: `Bearer ${t1}`, accept: 'application/x-ndjson' } });
    const text = await exported.text();
    conform('GET', exportPath, { status: exported.status, headers: exported.headers, body: text as unknown as Json }, exported.headers.get('content-type'));
    expect(exported.status).toBe(200);
    expect(JSON.parse(text.trim())).toEqual(page.body.items[0]);

    const hook = await call('POST', `${API}/webhooks`, { token: t1, body: { url: 'http://127.0.0.1:9/hook', description: 'back office' } });
    expect(hook.status).toBe(201);
    expect(hook.headers.get('location')).toBe(`${API}/webhooks/${hook.body.id}`);
    expect((await call('POST', `${API}/webhooks`, { token: t1, body: { url: 'ftp://127.0.0.1/x' } })).status).toBe(400);
    expect((await call('GET', `${API}/webhooks`, { token: t1 })).body.items).toContainEqual(expect.objectContaining({ id: hook.body.id }));
    expect(hook.body).toMatchObject({ enabled: true, disabledAt: null, consecutiveFailures: 0, previousSecretExpiresAt: null });
    const queued = await call('POST', `${API}/webhooks/${hook.body.id}/test`, { token: t1 });
    expect(queued.status).toBe(202);
    const log = await call('GET', `${API}/webhooks/${hook.body.id}/deliveries`, { token: t1 });
    expect(log.status).toBe(200);
    expect(log.body.items[0]).toMatchObject({ eventType: 'webhook.test', redeliveryOf: null });
    expect((await call('GET', `${API}/webhooks/${hook.body.id}`, { token: t1 })).body).toMatchObject({ id: hook.body.id, description: 'back office' });
    const patched = await call('PATCH', `${API}/webhooks/${hook.body.id}`, { token: t1, body: { description: null, enabled: false } });
    expect(patched.body).toMatchObject({ description: null, enabled: false, disabledAt: expect.any(String) });
    expect((await call('PATCH', `${API}/webhooks/${hook.body.id}`, { token: t1, body: { url: 'ftp://127.0.0.1/x' } })).status).toBe(400);
    const rotated = await call('POST', `${API}/webhooks/${hook.body.id}/rotate-secret`, { token: t1 });
    expect(rotated.status).toBe(200);
    expect(rotated.body.secret).not.toBe(hook.body.secret);
    expect((await call('POST', `${API}/webhooks/${hook.body.id}/rotate-secret`, { token: t1, body: { graceSeconds: -1 } })).status).toBe(400);
    const again = await call('POST', `${API}/webhooks/${hook.body.id}/deliveries/${queued.body.deliveryId}/redeliver`, { token: t1 });
    expect(again.status).toBe(202);
    expect(again.body.redeliveryOf).toBe(queued.body.deliveryId);
    expect((await call('POST', `${API}/webhooks/${hook.body.id}/deliveries/${queued.body.deliveryId}/redeliver`, { token: t2 })).status).toBe(404);
    expect((await call('GET', `${API}/webhooks/${hook.body.id}`, { token: t2 })).status).toBe(404);
    expect((await call('PATCH', `${API}/webhooks/${hook.body.id}`, { token: t2, body: { enabled: true } })).status).toBe(404);
    expect((await call('POST', `${API}/webhooks/${hook.body.id}/rotate-secret`, { token: t2 })).status).toBe(404);
    expect((await call('GET', `${API}/webhooks/${hook.body.id}/deliveries`, { token: t2 })).status).toBe(404);
    expect((await call('DELETE', `${API}/webhooks/${hook.body.id}`, { token: t2 })).status).toBe(404);
    expect((await call('POST', `${API}/webhooks/${hook.body.id}/test`, { token: t2 })).status).toBe(404);
    expect((await call('DELETE', `${API}/webhooks/${hook.body.id}`, { token: t1 })).status).toBe(204);
    expect((await call('DELETE', `${API}/webhooks/${hook.body.id}`, { token: t1 })).status).toBe(404);
  });

  // Runs last (jest keeps declaration order within a file): the calls above cover the whole document.
  test('every operation of the OpenAPI document was exercised, and every response matched it', () => {
    const documented = Object.entries(doc.paths).flatMap(([p, item]) =>
      Object.keys(item)
        .filter((m) => ['get', 'post', 'patch', 'put', 'delete'].includes(m))
        .map((m) => `${m.toUpperCase()} ${p}`),
    );
    expect(documented).toHaveLength(20);
    expect(documented.filter((op) => !exercised.has(op))).toEqual([]);
  });
});
