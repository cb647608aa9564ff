import { randomBytes } from 'node:crypto';
import * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { Agent, csrfOf, discover } from '../support/browser-less.js';
import { signInToArea } from '../support/account-area.js';

/** t1 allows the passkey methods; t2 (the default contract: otp only) does not. */
const TENANTS = () => parseTenants('t', TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, passkey, otp_passkey]'));

async function signedIn(s: TestServer, tenantId = 't1', client = 'rp-basic') {
  const u = uniqueUser('pk');
  const account = await s.app.services.accounts.create({ tenantId, userId: u.userId, devices: [{ email: u.email }] });
  const agent = new Agent(s.issuer);
  const top = await signInToArea(s, agent, u, `/account/?client_id=${client}`);
  expect(top.status).toBe(200);
  return { u, account, agent, html: await top.text() };
}

/** A stored passkey (as a registration would leave it), without a browser. */
function addPasskey(s: TestServer, accountId: string, name = 'ノートPC') {
  return s.app.services.passkeys.create({
    accountId,
    deviceId: null,
    credentialId: randomBytes(16).toString('base64url'),
    publicKey: randomBytes(77),
    counter: 0,
    transports: ['internal'],
    deviceType: 'singleDevice',
    backedUp: false,
    aaguid: null,
    name,
  });
}

describe('account area: passkeys (HTTP)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ tenants: TENANTS() });
  });
  afterAll(async () => {
    await s?.close();
  });

  test('the menu and the pages exist only where the contract allows a passkey method', async () => {
    const one = await signedIn(s);
    expect(one.html).toContain('href="/account/passkeys"');
    expect((await one.agent.get('/account/passkeys')).status).toBe(200);
    const other = await signedIn(s, 't2', 'rp-t2');
    expect(other.html).not.toContain('href="/account/passkeys"');
    expect((await other.agent.get('/account/passkeys')).status).toBe(403);
    expect((await other.agent.get('/account/passkeys/new')).status).toBe(403);
  });

  test("another account's passkey (same tenant or another) is a 404 for rename and delete, and stays as it was", async () => {
    const me = await signedIn(s);
    const victim = await s.app.services.accounts.create({ tenantId: 't1', userId: uniqueUser('pkv').userId, devices: [{ email: uniqueUser('pkv').email }] });
    const theirs = (await addPasskey(s, victim.id, 'victim'))!;
    const elsewhere = await s.app.services.accounts.create({ tenantId: 't2', userId: uniqueUser('pkw').userId, devices: [{ email: uniqueUser('pkw').email }] });
    const foreign = (await addPasskey(s, elsewhere.id, 'other tenant'))!;
    const csrf = csrfOf(me.html);
    for (const p of [theirs, foreign]) {
      expect((await me.agent.get(`/account/passkeys/${p.id}/rename`)).status).toBe(404);
      expect((await me.agent.get(`/account/passkeys/${p.id}/delete`)).status).toBe(404);
      expect((await me.agent.post(`/account/passkeys/${p.id}/rename`, { _csrf: csrf, name: 'taken over' })).status).toBe(404);
      expect((await me.agent.post(`/account/passkeys/${p.id}/delete`, { _csrf: csrf })).status).toBe(404);
    }
    // Not even a malformed id reaches a query.
    expect((await me.agent.post('/account/passkeys/not-a-uuid/delete', { _csrf: csrf })).status).toBe(404);
    const left = await s.db.prisma.passkey.findMany({ where: { id: { in: [theirs.id, foreign.id] } }, orderBy: { name: 'asc' } });
    expect(left.map((p) => p.name)).toEqual(['other tenant', 'victim']);
    expect(await s.db.prisma.accountEvent.count({ where: { accountId: { in: [victim.id, elsewhere.id] }, type: { in: ['passkey_renamed', 'passkey_deleted'] } } })).toBe(0);
  });

  test('rename: a name is required and bounded; the own passkey is renamed and the change recorded', async () => {
    const me = await signedIn(s);
    const mine = (await addPasskey(s, me.account.id))!;
    const page = await (await me.agent.get(`/account/passkeys/${mine.id}/rename`)).text();
    const empty = await me.agent.post(`/account/passkeys/${mine.id}/rename`, { _csrf: csrfOf(page), name: '   ' });
    expect(empty.status).toBe(400);
    expect(await empty.text()).toContain('パスキーの名前を入力してください。');
    const long = await me.agent.post(`/account/passkeys/${mine.id}/rename`, { _csrf: csrfOf(page), name: 'x'.repeat(65) });
    expect(long.status).toBe(400);
    const ok = await me.agent.post(`/account/passkeys/${mine.id}/rename`, { _csrf: csrfOf(page), name: '会社のパソコン' });
    expect(ok.status).toBe(303);
    expect(ok.headers.get('location')).toBe('/account/passkeys?done=renamed');
    expect((await s.db.prisma.passkey.findUnique({ where: { id: mine.id } }))!.name).toBe('会社のパソコン');
    expect(await s.db.prisma.accountEvent.count({ where: { accountId: me.account.id, type: 'passkey_renamed' } })).toBe(1);
  });

  test('the last passkey of an account whose method needs one cannot be deleted; with another one left it can', async () => {
    const me = await signedIn(s);
    const first = (await addPasskey(s, me.account.id, 'first'))!;
    // The method changed meanwhile (as through the management API); the area session stays.
    await s.db.prisma.account.update({ where: { id: me.account.id }, data: { loginMethod: 'passkey' } });
    const page = await me.agent.get(`/account/passkeys/${first.id}/delete`);
    const html = await page.text();
    expect(html).toContain('最後のパスキーは削除できません');
    expect(html).not.toContain('id="delete"');
    const forced = await me.agent.post(`/account/passkeys/${first.id}/delete`, { _csrf: csrfOf(html) });
    expect(forced.status).toBe(409);
    expect(await forced.text()).toContain('最後のパスキーは削除できません');
    expect(await s.db.prisma.passkey.count({ where: { accountId: me.account.id } })).toBe(1);

    await addPasskey(s, me.account.id, 'second');
    const mark = s.smtp.messages.length;
    const gone = await me.agent.post(`/account/passkeys/${first.id}/delete`, { _csrf: csrfOf(html) });
    expect(gone.status).toBe(303);
    expect((await s.db.prisma.passkey.findMany({ where: { accountId: me.account.id } })).map((p) => p.name)).toEqual(['second']);
    const notice = await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= mark && m.to.includes(me.u.email) && m.subject.includes('パスキー削除のお知らせ'));
    expect(notice.text).toContain('first');
  });

  test('malformed registrations and names are a 400 in the area, never a 5xx, and store nothing', async () => {
    const me = await signedIn(s);
    const mine = (await addPasskey(s, me.account.id))!;
    const page = await (await me.agent.get('/account/passkeys/new')).text();
    expect(page).toMatch(/<script id="passkey-options" type="application\/json">\{"challenge":/);
    const csrf = csrfOf(page);
    const bodies: Array<Record<string, string>> = [
      { name: 'PC', response: '' },
      { name: 'PC', response: 'null' },
      { name: 'PC', response: '[]' },
      { name: 'PC', response: '{"id":"'.padEnd(12_000, 'A') },
      { name: 'PC', device: '99', response: '{}' },
      { name: 'PC', device: '../1', response: '{}' },
      { name: '', response: '{}' },
      { name: 'x'.repeat(500), response: '{}' },
      { name: 'a\u0007b', response: '{}' },
    ];
    for (const b of bodies) {
      const res = await me.agent.post('/account/passkeys/new', { _csrf: csrf, ...b });
      expect([JSON.stringify(b).slice(0, 60), res.status]).toEqual([JSON.stringify(b).slice(0, 60), 400]);
    }
    // Past the form limit: the body parser's 413.
    expect((await me.agent.post('/account/passkeys/new', { _csrf: csrf, name: 'PC', response: 'A'.repeat(20_000) })).status).toBe(413);
    for (const name of ['', 'a\u0001b', 'x'.repeat(65)]) expect((await me.agent.post(`/account/passkeys/${mine.id}/rename`, { _csrf: csrf, name })).status).toBe(400);
    expect(await s.db.prisma.passkey.count({ where: { accountId: me.account.id } })).toBe(1);
    expect((await s.db.prisma.passkey.findUnique({ where: { id: mine.id } }))!.name).toBe('ノートPC');
  });

  test('two deletes at once of the two passkeys of a passkey method leave one of them', async () => {
    for (let round = 0; round < 5; round++) {
      const u = uniqueUser('pkrace');
      const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, loginMethod: 'passkey', devices: [{ email: u.email }] });
      const [a, b] = [(await addPasskey(s, account.id, 'a'))!, (await addPasskey(s, account.id, 'b'))!];
      const tenant = s.config.tenants.find((t) => t.id === 't1')!;
      const req = { ip: '127.0.0.1', locale: 'ja' as const };
      const results = await Promise.allSettled([a, b].map((p) => s.app.services.accountPasskeys.delete(account, tenant, p.id, req)));
      expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
      expect(await s.db.prisma.passkey.count({ where: { accountId: account.id } })).toBe(1);
    }
  });

  test('login method: passkey methods are offered once the account has a passkey; choosing one without is refused', async () => {
    const me = await signedIn(s);
    const choose = await (await me.agent.get('/account/login-method')).text();
    expect(choose).not.toContain('value="passkey"');
    expect(choose).not.toContain('value="otp_passkey"');
    expect(choose).toContain('パスキーを登録すると選択できます');
    // A forged choice, at either step.
    const next = await me.agent.post('/account/login-method', { _csrf: csrfOf(choose), method: 'passkey' });
    expect(next.status).toBe(400);
    expect(await next.text()).toContain('パスキーを使うログイン方法に変更するには、先にパスキーを登録してください。');
    const execute = await me.agent.post('/account/login-method/execute', { _csrf: csrfOf(choose), method: 'otp_passkey' });
    expect(execute.status).toBe(400);
    expect((await s.app.services.accounts.findById(me.account.id))!.loginMethod).toBe('otp');

    await addPasskey(s, me.account.id);
    const offered = await (await me.agent.get('/account/login-method')).text();
    expect(offered).toContain('value="passkey"');
    expect(offered).toContain('value="otp_passkey"');
    const confirm = await me.agent.post('/account/login-method', { _csrf: csrfOf(offered), method: 'otp_passkey' });
    const confirmHtml = await confirm.text();
    expect(confirm.status).toBe(200);
    expect(confirmHtml).toContain('登録済みのパスキーでログインします');
    expect(confirmHtml).not.toContain('name="password"');
    const done = await me.agent.post('/account/login-method/execute', { _csrf: csrfOf(confirmHtml), method: 'otp_passkey' });
    expect(done.status).toBe(200);
    expect((await s.app.services.accounts.findById(me.account.id))!.loginMethod).toBe('otp_passkey');
    expect((await s.db.prisma.accountEvent.findMany({ where: { accountId: me.account.id, type: 'login_method_changed' } })).map((e) => e.detail)).toEqual([{ from: 'otp', to: 'otp_passkey' }]);
  });

  test('management API: to a passkey method without a passkey sends the account through activation; with one it stays active', async () => {
    const config = await discover(s.issuer, 'backoffice-t1', 'backoffice-t1-secret-0123456789');
    const { access_token } = await oidc.clientCredentialsGrant(config, { scope: 'management' });
    const patch = (userId: string, body: object) =>
      fetch(new URL(`/api/v1/accounts/${encodeURIComponent(userId)}`, s.issuer), {
        method: 'PATCH',
        headers: { authorization: `Bearer ${access_token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const without = uniqueUser('pkapi');
    const a = await s.app.services.accounts.create({ tenantId: 't1', userId: without.userId, devices: [{ email: without.email }] });
    const res = await patch(without.userId, { loginMethod: 'passkey' });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { status: string; loginMethod: string; activation?: { otp: string } };
    expect(body).toMatchObject({ status: 'pending_activation', loginMethod: 'passkey' });
    expect(body.activation?.otp).toMatch(/^\d{8}$/);
    expect((await s.app.services.accounts.findById(a.id))!.status).toBe('pending_activation');

    const withOne = uniqueUser('pkapi');
    const b = await s.app.services.accounts.create({ tenantId: 't1', userId: withOne.userId, devices: [{ email: withOne.email }] });
    await addPasskey(s, b.id);
    const kept = (await (await patch(withOne.userId, { loginMethod: 'otp_passkey' })).json()) as { status: string; activation?: unknown };
    expect(kept.status).toBe('active');
    expect(kept.activation).toBeUndefined();
  });
});

describe('account area: passkey registration and deletion need a recent sign-in (ACCOUNT_REAUTH_AGE=0)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ tenants: TENANTS(), env: { ACCOUNT_REAUTH_AGE: '0' } });
  });
  afterAll(async () => {
    await s?.close();
  });

  test('list without; register and delete (page and post) go to re-authentication first, and change nothing', async () => {
    const me = await signedIn(s);
    const mine = (await addPasskey(s, me.account.id))!;
    // With ACCOUNT_REAUTH_AGE=0 any sign-in already in the past is stale (auth_time is whole seconds).
    const list = await me.agent.get('/account/passkeys');
    expect(list.status).toBe(200);
    const csrf = csrfOf(await list.text());
    const cases: Array<[string, Response, string]> = [
      ['GET new', await me.agent.get('/account/passkeys/new'), '/account/passkeys/new'],
      ['POST new', await me.agent.post('/account/passkeys/new', { _csrf: csrf, name: 'x', response: '{}' }), '/account/passkeys/new'],
      ['GET delete', await me.agent.get(`/account/passkeys/${mine.id}/delete`), `/account/passkeys/${mine.id}/delete`],
      ['POST delete', await me.agent.post(`/account/passkeys/${mine.id}/delete`, { _csrf: csrf }), `/account/passkeys/${mine.id}/delete`],
    ];
    for (const [what, res, back] of cases) {
      expect([what, res.status]).toEqual([what, 303]);
      expect([what, res.headers.get('location')]).toEqual([what, `/account/reauth?return=${encodeURIComponent(back)}`]);
    }
    expect(await s.db.prisma.passkey.count({ where: { accountId: me.account.id } })).toBe(1);
  });
});
