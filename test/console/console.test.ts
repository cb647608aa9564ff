import { parseTenants } from '../../src/config/tenants.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { Agent, confirmEndSession, csrfOf } from '../support/browser-less.js';
import { consoleTenantsYaml, newStaff, signInToConsole, walkLogin } from '../support/console.js';
import { signInToArea } from '../support/account-area.js';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { waitUntil } from '../mail/mail-store.js';

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
    expect(await confirmEndSession(agent, out)).toBe(`${s.issuer}/console/logged-out`);
    expect(await (await agent.get('/console/logged-out')).text()).toContain('ログアウトしました');
    const back = await agent.get('/console/');
    expect(back.status).toBe(303);
    expect(back.headers.get('location')).toMatch(/^\/console\/login/);
  });

  test('odd search and page input is no error: bad values are ignored, another tenant is never chosen by the request', async () => {
    const staff = await newStaff(s, 't1', 'support');
    const agent = new Agent(s.issuer);
    await signInToConsole(s, agent, staff, 't1');
    for (const q of ['page=abc', 'page=-1', 'status=deleted', 'user_id=%25%5F', 'email=' + 'x'.repeat(400), 'user_id=a&user_id=b', 'tenant=t2'])
      expect((await agent.get(`/console/?${q}`)).status).toBe(200);
    expect((await agent.get('/console/accounts/%00')).status).toBe(400);
    expect((await agent.get(`/console/accounts/${'x'.repeat(300)}`)).status).toBe(404);
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

describe('support console: actions on an account', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ tenants: parseTenants('t', consoleTenantsYaml(TEST_TENANTS_YAML)) });
  });
  afterAll(async () => {
    await s?.close();
  });

  async function newUser(tenantId = 't1') {
    const u = uniqueUser('act');
    const a = await s.app.services.accounts.create({ tenantId, userId: u.userId, devices: [{ email: u.email }] });
    return { ...u, id: a.id };
  }
  async function staffAgent(role: 'support' | 'admin', tenantId = 't1') {
    const staff = await newStaff(s, tenantId, role);
    const agent = new Agent(s.issuer);
    expect((await signInToConsole(s, agent, staff, tenantId)).status).toBe(200);
    return { staff, agent };
  }
  /** Opens the action's confirmation page and submits its form with `fields`. */
  async function act(agent: Agent, userId: string, action: string, fields: Record<string, string> = {}, query = '') {
    const page = await agent.get(`/console/accounts/${userId}/actions/${action}${query}`);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('id="confirm"');
    return agent.post(`/console/accounts/${userId}/actions/${action}`, { _csrf: csrfOf(html), ...fields });
  }
  const audits = (userId: string) => s.db.prisma.auditRecord.findMany({ where: { targetUserId: userId }, orderBy: { createdAt: 'asc' } });

  test('unlock asks for confirmation, unlocks, tells the user, and is audited with the staff member as actor', async () => {
    const { staff, agent } = await staffAgent('support');
    const u = await newUser();
    await s.db.prisma.account.update({ where: { id: u.id }, data: { lockedAt: new Date(), failedAttempts: 5 } });
    const before = s.smtp.messages.length;
    const res = await act(agent, u.userId, 'unlock');
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toBe(`/console/accounts/${u.userId}?done=unlocked`);
    expect(await (await agent.get(res.headers.get('location')!)).text()).toContain('ロックを解除しました');
    expect(await s.db.prisma.account.findUnique({ where: { id: u.id } })).toMatchObject({ lockedAt: null, failedAttempts: 0 });
    await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= before && m.to.includes(u.email));
    const [record] = await audits(u.userId);
    expect(record).toMatchObject({ tenantId: 't1', actorKind: 'console', actorId: staff.userId, action: 'account.unlocked', sourceIp: expect.any(String) });
    expect(record!.requestId).toBeTruthy();
    const event = await s.db.prisma.accountEvent.findFirst({ where: { accountId: u.id, type: 'unlocked' } });
    expect(event?.actor).toBe('admin');
  });

  test('a new activation is shown once, or mailed; both are audited', async () => {
    const { staff, agent } = await staffAgent('support');
    const u = await newUser();
    const shown = await act(agent, u.userId, 'activation', { delivery: 'show' });
    expect(shown.status).toBe(200);
    const html = await shown.text();
    const code = /id="activation-code">(\d+)</.exec(html)?.[1];
    expect(code).toMatch(/^\d{6,12}$/);
    expect(html).toContain(`/activation/t1`);
    expect(shown.headers.get('cache-control')).toBe('no-store');
    const before = s.smtp.messages.length;
    const mailed = await act(agent, u.userId, 'activation', { delivery: 'mail' });
    expect(mailed.headers.get('location')).toBe(`/console/accounts/${u.userId}?done=activation_mailed`);
    await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= before && m.to.includes(u.email));
    expect((await audits(u.userId)).map((r) => [r.action, r.actorKind, r.actorId])).toEqual([
      ['account.activation_issued', 'console', staff.userId],
      ['account.activation_issued', 'console', staff.userId],
    ]);
  });

  test("ending all sessions signs the user out everywhere and is audited", async () => {
    const { staff, agent } = await staffAgent('support');
    const u = await newUser();
    const user = new Agent(s.issuer);
    expect((await signInToArea(s, user, u)).status).toBe(200);
    expect(await s.app.services.providerSessions.listForAccount(u.id)).toHaveLength(1);
    const detail = await (await agent.get(`/console/accounts/${u.userId}`)).text();
    expect(detail).toMatch(/data-session="[^"]+"/);
    const res = await act(agent, u.userId, 'end-sessions');
    expect(res.headers.get('location')).toBe(`/console/accounts/${u.userId}?done=sessions_ended`);
    expect(await s.app.services.providerSessions.listForAccount(u.id)).toHaveLength(0);
    // The user's account area session ended with it.
    expect((await user.get('/account/')).status).toBe(303);
    expect((await audits(u.userId)).map((r) => [r.action, r.actorId])).toEqual([['account.sessions_ended', staff.userId]]);
  });

  test("revoking a device's certificate, and changing the login method (the credential step goes to the user by mail)", async () => {
    const { staff, agent } = await staffAgent('support');
    const u = await newUser();
    const account = (await s.app.services.accounts.findById(u.id))!;
    await s.app.services.certificates.issue(u.id, account.devices[0]!.id);
    const page = await (await agent.get(`/console/accounts/${u.userId}`)).text();
    expect(page).toContain('id="revoke-1"');
    const revoked = await act(agent, u.userId, 'revoke-certificate', { device: '1' }, '?device=1');
    expect(revoked.headers.get('location')).toBe(`/console/accounts/${u.userId}?done=certificate_revoked`);
    expect((await s.app.services.certificates.listForAccount(u.id)).map((c) => c.status)).toEqual(['revoked']);
    expect((await agent.get(`/console/accounts/${u.userId}/actions/revoke-certificate?device=9`)).status).toBe(404);

    const before = s.smtp.messages.length;
    const changed = await act(agent, u.userId, 'login-method', { method: 'password_otp' });
    expect(changed.headers.get('location')).toBe(`/console/accounts/${u.userId}?done=method_changed_activation`);
    expect(await s.db.prisma.account.findUnique({ where: { id: u.id } })).toMatchObject({ loginMethod: 'password_otp', status: 'pending_activation' });
    await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= before && m.to.includes(u.email));
    expect((await audits(u.userId)).map((r) => [r.action, r.actorId])).toEqual([
      ['account.certificate_revoked', staff.userId],
      ['account.updated', staff.userId],
    ]);
  });

  test('delete is for admins, with the user ID typed to confirm; support gets 403', async () => {
    const u = await newUser();
    const support = await staffAgent('support');
    expect((await support.agent.get(`/console/accounts/${u.userId}/actions/delete`)).status).toBe(403);
    const detail = await (await support.agent.get(`/console/accounts/${u.userId}`)).text();
    expect(detail).not.toContain('id="action-delete"');
    expect((await support.agent.post(`/console/accounts/${u.userId}/actions/delete`, { _csrf: csrfOf(detail), confirm_user_id: u.userId })).status).toBe(403);
    expect(await s.db.prisma.account.findUnique({ where: { id: u.id } })).not.toBeNull();

    const { staff, agent } = await staffAgent('admin');
    const wrong = await act(agent, u.userId, 'delete', { confirm_user_id: `${u.userId}x` });
    expect(wrong.status).toBe(400);
    expect(await wrong.text()).toContain('入力されたユーザIDが一致しません');
    expect(await s.db.prisma.account.findUnique({ where: { id: u.id } })).not.toBeNull();
    const done = await act(agent, u.userId, 'delete', { confirm_user_id: u.userId });
    expect(done.status).toBe(303);
    expect(await s.db.prisma.account.findUnique({ where: { id: u.id } })).toBeNull();
    // The refused attempts are in the trail too: support's (not allowed), and the mistyped confirmation.
    expect((await audits(u.userId)).map((r) => [r.action, r.actorKind, r.actorId, r.outcome, r.errorCode])).toEqual([
      ['account.deleted', 'console', support.staff.userId, 'refused', 'forbidden'],
      ['account.deleted', 'console', staff.userId, 'refused', 'bad_request'],
      ['account.deleted', 'console', staff.userId, 'done', null],
    ]);
  });

  test('a form without its CSRF token is refused and changes nothing', async () => {
    const { agent } = await staffAgent('admin');
    const u = await newUser();
    await s.db.prisma.account.update({ where: { id: u.id }, data: { lockedAt: new Date(), failedAttempts: 5 } });
    expect((await agent.post(`/console/accounts/${u.userId}/actions/unlock`, {})).status).toBe(403);
    expect((await agent.post(`/console/accounts/${u.userId}/actions/delete`, { _csrf: 'forged', confirm_user_id: u.userId })).status).toBe(403);
    expect(await s.db.prisma.account.findUnique({ where: { id: u.id } })).toMatchObject({ failedAttempts: 5 });
    expect(await audits(u.userId)).toEqual([]);
  });

  test("another tenant's admin gets 404 on every forged action for this tenant's account, and nothing changes", async () => {
    const u = await newUser('t1');
    await s.db.prisma.account.update({ where: { id: u.id }, data: { lockedAt: new Date(), failedAttempts: 5 } });
    const { agent } = await staffAgent('admin', 't2');
    const csrf = csrfOf(await (await agent.get('/console/')).text());
    for (const action of ['unlock', 'activation', 'end-sessions', 'login-method', 'delete']) {
      expect((await agent.get(`/console/accounts/${u.userId}/actions/${action}`)).status).toBe(404);
      const res = await agent.post(`/console/accounts/${u.userId}/actions/${action}`, { _csrf: csrf, confirm_user_id: u.userId, method: 'otp', delivery: 'show', device: '1' });
      expect(res.status).toBe(404);
    }
    expect((await agent.post(`/console/accounts/${u.userId}/actions/revoke-certificate`, { _csrf: csrf, device: '1' })).status).toBe(404);
    expect(await s.db.prisma.account.findUnique({ where: { id: u.id } })).toMatchObject({ failedAttempts: 5, status: 'active' });
    // Nothing in this tenant's trail; the attempts are in the other tenant's, refused: they found nothing.
    const trail = await audits(u.userId);
    expect(trail.filter((r) => r.tenantId === 't1')).toEqual([]);
    expect(trail.map((r) => [r.tenantId, r.action, r.outcome, r.errorCode])).toEqual([
      ['t2', 'account.unlocked', 'refused', 'account_not_found'],
      ['t2', 'account.activation_issued', 'refused', 'account_not_found'],
      ['t2', 'account.sessions_ended', 'refused', 'account_not_found'],
      ['t2', 'account.updated', 'refused', 'account_not_found'],
      ['t2', 'account.deleted', 'refused', 'account_not_found'],
      ['t2', 'account.certificate_revoked', 'refused', 'account_not_found'],
    ]);
  });
});

describe('support console: audit trail and webhooks', () => {
  let s: TestServer;
  beforeAll(async () => {
    // Webhook receivers on 127.0.0.1 (the test's own) are allowed here.
    s = await startTestServer({ tenants: parseTenants('t', consoleTenantsYaml(TEST_TENANTS_YAML)), env: { WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true' } });
  });
  afterAll(async () => {
    await s?.close();
  });

  async function staffAgent(role: 'support' | 'admin', tenantId = 't1') {
    const staff = await newStaff(s, tenantId, role);
    const agent = new Agent(s.issuer);
    expect((await signInToConsole(s, agent, staff, tenantId)).status).toBe(200);
    return { staff, agent };
  }

  test('the audit view lists the tenant\'s records newest first, filters by user ID, action, actor and time, pages, and exports JSON Lines', async () => {
    const { staff, agent } = await staffAgent('admin');
    const users = [];
    for (let i = 0; i < 3; i++) {
      const u = uniqueUser('aud');
      await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
      users.push(u);
    }
    const who = { actor: 'admin' as const, ip: '192.0.2.9', staff: { kind: 'console' as const, id: staff.userId, ip: '192.0.2.9', requestId: null } };
    for (const u of users) await s.app.services.accountService.unlock('t1', u.userId, who);
    await s.app.services.accountService.issueActivation('t1', users[0]!.userId, { ...who, mail: false });
    // Another tenant's record never shows.
    const other = uniqueUser('aud2');
    await s.app.services.accounts.create({ tenantId: 't2', userId: other.userId, devices: [{ email: other.email }] });
    await s.app.services.accountService.unlock('t2', other.userId, { ...who, staff: { ...who.staff, id: 'someone-in-t2' } });

    const page = await agent.get(`/console/audit?actor_id=${staff.userId}`);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect((html.match(/data-action="/g) ?? []).length).toBe(4);
    expect(html).toContain('初回認証の発行');
    expect(html).toContain(`<td>サポートコンソール<br>${staff.userId}</td>`);
    expect(html).not.toContain(other.userId);
    const byUser = await (await agent.get(`/console/audit?user_id=${users[0]!.userId}&action=account.unlocked`)).text();
    expect((byUser.match(/data-action="account.unlocked"/g) ?? []).length).toBe(1);
    const future = await (await agent.get(`/console/audit?actor_id=${staff.userId}&since=2999-01-01T00:00`)).text();
    expect(future).toContain('該当する記録はありません');
    const exported = await agent.get(`/console/audit/export?actor_id=${staff.userId}`);
    expect(exported.headers.get('content-type')).toMatch(/ndjson/);
    const lines = (await exported.text()).trim().split('\n').map((l) => JSON.parse(l) as { action: string; tenant: string });
    expect(lines.map((l) => l.action)).toEqual(['account.activation_issued', 'account.unlocked', 'account.unlocked', 'account.unlocked']);
    expect(new Set(lines.map((l) => l.tenant))).toEqual(new Set(['t1']));
    // Pages of 50, by cursor: 51 records of one actor make two pages, without repeats.
    for (let i = 0; i < 51; i++) await s.app.services.audit.record({ tenantId: 't1', who: { ...who.staff, id: 'pager' }, action: 'account.updated', userId: `p-page-${i}`, before: null, after: null });
    const first = await (await agent.get('/console/audit?actor_id=pager')).text();
    expect((first.match(/data-action="/g) ?? []).length).toBe(50);
    const next = /id="next" href="([^"]+)"/.exec(first)![1]!.replaceAll('&amp;', '&');
    const second = await (await agent.get(next)).text();
    expect((second.match(/data-action="/g) ?? []).length).toBe(1);
    expect(second).not.toContain('id="next"');
    const en = await (await agent.get(`/console/audit?actor_id=${staff.userId}`, { 'accept-language': 'en' })).text();
    expect(en).toContain('Audit trail');
    expect(en).toContain('Activation issued');
  });

  test('admins register a webhook (secret shown once), send a test delivery that reaches the receiver, and see it in the delivery log; support cannot register', async () => {
    const received: Array<{ headers: IncomingMessage['headers']; body: string }> = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        received.push({ headers: req.headers, body });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    try {
      const support = await staffAgent('support');
      const list = await (await support.agent.get('/console/webhooks')).text();
      expect(list).not.toContain('id="register"');
      expect((await support.agent.post('/console/webhooks', { _csrf: csrfOf(list), url })).status).toBe(403);

      const { agent } = await staffAgent('admin');
      const page = await (await agent.get('/console/webhooks')).text();
      const registered = await agent.post('/console/webhooks', { _csrf: csrfOf(page), url, description: 'support desk' });
      expect(registered.status).toBe(200);
      const html = await registered.text();
      const secret = /id="hook-secret">([^<]+)</.exec(html)?.[1];
      expect(secret).toMatch(/^whsec_/);
      const hookId = /href="\/console\/webhooks\/([0-9a-f-]{36})"/.exec(html)![1]!;
      // Listed afterwards, without the secret.
      const after = await (await agent.get('/console/webhooks')).text();
      expect(after).toContain(url);
      expect(after).not.toContain(secret!);

      const detail = await (await agent.get(`/console/webhooks/${hookId}`)).text();
      const sent = await agent.post(`/console/webhooks/${hookId}/test`, { _csrf: csrfOf(detail) });
      expect(sent.headers.get('location')).toBe(`/console/webhooks/${hookId}?done=test_queued`);
      await waitUntil(() => received.length > 0, 'the test delivery at the receiver');
      expect(JSON.parse(received[0]!.body)).toMatchObject({ type: 'webhook.test' });
      const log = await waitUntil(async () => {
        const page = await (await agent.get(`/console/webhooks/${hookId}`)).text();
        return page.includes('data-status="delivered"') && page;
      }, 'the delivery log saying delivered');
      expect(log).toContain('data-event="webhook.test"');
      expect(log).toContain('HTTP 204');

      // Another tenant's admin finds nothing of it.
      const t2 = await staffAgent('admin', 't2');
      const t2Page = await (await t2.agent.get('/console/webhooks')).text();
      expect(t2Page).not.toContain(url);
      expect((await t2.agent.get(`/console/webhooks/${hookId}`)).status).toBe(404);
      expect((await t2.agent.post(`/console/webhooks/${hookId}/test`, { _csrf: csrfOf(t2Page) })).status).toBe(404);
      expect((await t2.agent.post(`/console/webhooks/${hookId}/delete`, { _csrf: csrfOf(t2Page) })).status).toBe(404);

      const confirm = await (await agent.get(`/console/webhooks/${hookId}/delete`)).text();
      const deleted = await agent.post(`/console/webhooks/${hookId}/delete`, { _csrf: csrfOf(confirm) });
      expect(deleted.headers.get('location')).toBe('/console/webhooks?done=deleted');
      expect(await (await agent.get('/console/webhooks')).text()).not.toContain(url);
    } finally {
      receiver.closeAllConnections();
      await new Promise<void>((r) => receiver.close(() => r()));
    }
  });
});
