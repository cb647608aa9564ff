import { parseTenants } from '../../src/config/tenants.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { Agent, csrfOf } from '../support/browser-less.js';
import { consoleTenantsYaml, newStaff, signInToConsole, walkLogin } from '../support/console.js';

describe('support console: sign-in, staff check, search and account page', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ tenants: parseTenants('t', consoleTenantsYaml(TEST_TENANTS_YAML)) });
  });
  afterAll(async () => {
    await s?.close();
  });

  async function newUser(tenantId = 't1', prefix = 'cust') {
    const u = uniqueUser(prefix);
    const a = await s.app.services.accounts.create({ tenantId, userId: u.userId, devices: [{ email: u.email }, { email: `2-${u.email}`, kind: 'smartphone', verified: false }] });
    return { ...u, id: a.id };
  }

  test('staff (support) sign in with password + mailed code and see the search page in Japanese and English', async () => {
    const staff = await newStaff(s, 't1', 'support');
    const agent = new Agent(s.issuer);
    const page = await signInToConsole(s, agent, staff, 't1');
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('アカウント検索');
    expect(html).toContain(`${staff.userId}（サポート担当）`);
    const en = await agent.get('/console/', { 'accept-language': 'en' });
    const enHtml = await en.text();
    expect(enHtml).toContain('Account search');
    expect(enHtml).toContain(`${staff.userId} (Support)`);
    // The ID token the console accepted says password + code.
    const events = await s.db.prisma.loginEvent.findMany({ where: { submittedUserId: staff.userId, result: 'success' } });
    expect(events.map((e) => [e.clientId, e.method])).toEqual([['support-console-t1', 'password_otp']]);
  });

  test('an account without a staff role is refused with 403 after signing in, and gets no console session', async () => {
    const user = await newStaff(s, 't1', null);
    const agent = new Agent(s.issuer);
    const page = await signInToConsole(s, agent, user, 't1');
    expect(page.status).toBe(403);
    expect(await page.text()).toContain('サポートコンソールを利用する権限がありません');
    expect(agent.cookies.has('support_console')).toBe(false);
    const again = await agent.get('/console/');
    expect(again.status).toBe(303);
    expect(again.headers.get('location')).toMatch(/^\/console\/login/);
  });

  test('an ID token of a weaker method than password + code is refused at the callback', async () => {
    // The console asks for password_otp or stronger; a request stripped of acr_values lets an
    // OTP-only staff account through the provider, and the callback must still refuse its token.
    const staff = await newStaff(s, 't1', 'admin', 'otp');
    const agent = new Agent(s.issuer);
    const start = await agent.get('/console/login?tenant=t1');
    const auth = new URL(start.headers.get('location')!);
    expect(auth.searchParams.get('acr_values')).toBe('urn:anshin-login:acr:password-otp urn:anshin-login:acr:password-certificate urn:anshin-login:acr:passkey urn:anshin-login:acr:otp-passkey');
    auth.searchParams.delete('acr_values');
    const stripped = new Response(null, { status: 303, headers: { location: auth.pathname + auth.search } });
    const page = await walkLogin(s, agent, stripped, staff);
    expect(page.status).toBe(403);
    expect(await page.text()).toContain('パスワードとワンタイムパスワード、またはそれより強い方法');
    expect(agent.cookies.has('support_console')).toBe(false);
    // Through the console's own request the provider raises the login to password + code (the
    // account has a password), and that token is accepted.
    const other = new Agent(s.issuer);
    const raised = await signInToConsole(s, other, staff, 't1');
    expect(raised.status).toBe(200);
    const methods = (await s.db.prisma.loginEvent.findMany({ where: { submittedUserId: staff.userId, result: 'success' }, orderBy: { createdAt: 'asc' } })).map((e) => e.method);
    expect(methods).toEqual(['otp', 'password_otp']);
  });

  test('search by user ID prefix, e-mail address and status, paged, within the tenant only', async () => {
    const staff = await newStaff(s, 't1', 'support');
    const agent = new Agent(s.issuer);
    await signInToConsole(s, agent, staff, 't1');
    const prefix = `p-srch${process.pid}`;
    const mine = [];
    for (let i = 0; i < 22; i++) mine.push(await s.app.services.accounts.create({ tenantId: 't1', userId: `${prefix}-${String(i).padStart(2, '0')}`, devices: [{ email: `${prefix}-${i}@example.test` }] }));
    await s.app.services.accounts.create({ tenantId: 't2', userId: `${prefix}-t2`, devices: [{ email: `${prefix}-t2@example.test` }] });
    await s.db.prisma.account.update({ where: { id: mine[3]!.id }, data: { lockedAt: new Date(), failedAttempts: 5 } });

    const first = await (await agent.get(`/console/?user_id=${prefix}`)).text();
    expect(first).toContain('22件中 1～20件');
    expect(first).toContain('1/2ページ');
    expect(first).not.toContain(`${prefix}-t2`);
    const second = await (await agent.get(`/console/?user_id=${prefix}&page=2`)).text();
    expect(second).toContain('22件中 21～22件');
    expect((second.match(/data-user-id=/g) ?? []).length).toBe(2);

    const byMail = await (await agent.get(`/console/?email=${encodeURIComponent(`${prefix}-7@EXAMPLE.test`)}`)).text();
    expect((byMail.match(/data-user-id="([^"]+)"/g) ?? [])).toEqual([`data-user-id="${prefix}-07"`]);
    const locked = await (await agent.get(`/console/?user_id=${prefix}&status=locked`)).text();
    expect((locked.match(/data-user-id="([^"]+)"/g) ?? [])).toEqual([`data-user-id="${prefix}-03"`]);
    expect(locked).toContain('ロック中');
    // Another tenant's account is not found by its exact ID either; LIKE wildcards are no search.
    expect(await (await agent.get(`/console/?user_id=${prefix}-t2`)).text()).toContain('該当するアカウントはありません');
    expect(await (await agent.get(`/console/?user_id=%25`)).text()).not.toContain(`${prefix}-00`);
  });

  test('the account page shows status, lock, failures, devices with proof and certificate, passkeys, logins with IP and result, sessions', async () => {
    const staff = await newStaff(s, 't1', 'support');
    const agent = new Agent(s.issuer);
    await signInToConsole(s, agent, staff, 't1');
    const u = await newUser();
    const until = new Date(Date.now() + 3600_000);
    await s.db.prisma.account.update({ where: { id: u.id }, data: { lockedAt: new Date(), lockedUntil: until, failedAttempts: 5 } });
    await s.db.prisma.loginEvent.create({ data: { tenantId: 't1', accountId: u.id, submittedUserId: u.userId, clientId: 'rp-basic', method: 'otp', result: 'wrong_otp', sourceIp: '198.51.100.7' } });
    const res = await agent.get(`/console/accounts/${u.userId}`);
    expect(res.status).toBe(200);
    const html = await res.text();
    expect(html).toContain(u.userId);
    expect(html).toMatch(/id="status">ロック中/);
    expect(html).toMatch(/id="failures">5</);
    expect(html).toContain(`id="locked-until">${until.toISOString().replace('T', ' ').slice(0, 19)} UTC`);
    expect(html).toContain(u.email);
    expect(html).toContain('確認済み');
    expect(html).toContain('確認待ち');
    expect(html).toContain('198.51.100.7');
    expect(html).toContain('ワンタイムパスワード誤り');
    expect(html).toContain('登録されていません');
    expect(html).toContain('ログイン中のセッションはありません');
    // The staff member's own account shows its console session.
    const own = await (await agent.get(`/console/accounts/${staff.userId}`)).text();
    expect(own).toMatch(/data-session="[^"]+"/);
    expect(own).toContain('サポートコンソール / Support console');
    const en = await (await agent.get(`/console/accounts/${u.userId}`, { 'accept-language': 'en' })).text();
    expect(en).toContain('Account details');
    expect(en).toContain('Lock lifts at');
  });

  test("another tenant's staff cannot see this tenant's accounts: 404 on a forged user ID, and their own tenant only", async () => {
    const t1User = await newUser('t1');
    const t2Staff = await newStaff(s, 't2', 'admin');
    const agent = new Agent(s.issuer);
    const page = await signInToConsole(s, agent, t2Staff, 't2');
    expect(page.status).toBe(200);
    const forged = await agent.get(`/console/accounts/${t1User.userId}`);
    expect(forged.status).toBe(404);
    expect(await forged.text()).not.toContain(t1User.email);
    expect(await (await agent.get(`/console/?user_id=${t1User.userId}`)).text()).toContain('該当するアカウントはありません');
    // A t2 account cannot sign in to t1's console: the provider asks for a login in t1, where it is unknown.
    const other = new Agent(s.issuer);
    const t1Attempt = await signInToConsole(s, other, t2Staff, 't1');
    expect(t1Attempt.status).not.toBe(200);
    expect(other.cookies.has('support_console')).toBe(false);
  });

  test('a role taken away or a lock ends console access at the next request (403)', async () => {
    const staff = await newStaff(s, 't1', 'support');
    const agent = new Agent(s.issuer);
    await signInToConsole(s, agent, staff, 't1');
    expect((await agent.get('/console/')).status).toBe(200);
    await s.db.prisma.account.update({ where: { id: staff.id }, data: { role: null } });
    expect((await agent.get('/console/')).status).toBe(403);
    const locked = await newStaff(s, 't1', 'admin');
    const lockedAgent = new Agent(s.issuer);
    await signInToConsole(s, lockedAgent, locked, 't1');
    await s.db.prisma.account.update({ where: { id: locked.id }, data: { lockedAt: new Date() } });
    expect((await lockedAgent.get('/console/')).status).toBe(403);
  });

  test('sign-out is CSRF protected, ends the provider session, and the console asks to sign in again', async () => {
    const staff = await newStaff(s, 't1', 'support');
    const agent = new Agent(s.issuer);
    const top = await (await signInToConsole(s, agent, staff, 't1')).text();
    expect((await agent.post('/console/logout', {})).status).toBe(403);
    const out = await agent.post('/console/logout', { _csrf: csrfOf(top) });
    expect(out.status).toBe(303);
    const end = new URL(out.headers.get('location')!, s.issuer);
    expect(end.pathname).toBe('/session/end');
    const confirm = await (await agent.get(end.pathname + end.search)).text();
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(confirm)![1]!;
    const done = await agent.post('/session/end/confirm', { xsrf, logout: 'yes' });
    expect(done.headers.get('location')).toBe(`${s.issuer}/console/logged-out`);
    expect(await (await agent.get('/console/logged-out')).text()).toContain('ログアウトしました');
    const back = await agent.get('/console/');
    expect(back.status).toBe(303);
    expect(back.headers.get('location')).toMatch(/^\/console\/login/);
  });

  test('the login page asks for the tenant and names an unknown one', async () => {
    const agent = new Agent(s.issuer);
    const ask = await agent.get('/console/login');
    expect(ask.status).toBe(200);
    expect(await ask.text()).toContain('テナントID');
    const unknown = await agent.get('/console/login?tenant=nope');
    expect(unknown.status).toBe(404);
    expect(await unknown.text()).toContain('テナント「nope」はありません');
  });

  test('a tenant whose contract turns the console off has no console client and no sign-in', async () => {
    const off = await startTestServer({ database: 'pglite', tenants: parseTenants('t', consoleTenantsYaml(TEST_TENANTS_YAML).replace('contract: { login_methods: [otp, password_otp] }', 'contract: { login_methods: [otp, password_otp], support_console: false }')) });
    try {
      expect(off.app.services.tenants.client('support-console-t2')).toBeUndefined();
      expect(off.app.services.tenants.client('support-console-t1')).toBeDefined();
      const res = await new Agent(off.issuer).get('/console/login?tenant=t2');
      expect(res.status).toBe(403);
      expect(await res.text()).toContain('サポートコンソールをご利用いただけません');
    } finally {
      await off.close();
    }
  });
});
