import { parseTenants } from '../../src/config/tenants.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { Agent, confirmEndSession, csrfOf } from '../support/browser-less.js';
import { follow, signInToArea } from '../support/account-area.js';


describe('account area: sign-in, top page, sign-out', () => {
  let s: TestServer;
  beforeAll(async () => {
    const tenants = parseTenants('t', TEST_TENANTS_YAML.replace("  - id: t2\n    name: テナント2\n", "  - id: t2\n    name: テナント2\n    contract: { account_area: false }\n"));
    s = await startTestServer({ tenants });
  });
  afterAll(async () => {
    await s?.close();
  });

  async function newUser() {
    const u = uniqueUser('area');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }, { email: `2-${u.email}`, kind: 'smartphone' }] });
    return u;
  }

  const signIn = (agent: Agent, u: { userId: string; email: string }) => signInToArea(s, agent, u);

  test('from a site link the user signs in and sees the manual top page with devices and the previous login', async () => {
    const u = await newUser();
    const agent = new Agent(s.issuer);
    await signIn(agent, u);
    const again = new Agent(s.issuer);
    const page = await signIn(again, u);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('利用されている端末の管理が行えます。');
    expect(html).toContain(u.userId);
    expect(html).toContain(u.email);
    expect(html).toContain('電子証明書有効期限');
    expect(html).toContain('前回のログイン');
    for (const item of ['アカウント管理', '秘密の質問・答え変更', 'ログイン履歴閲覧', 'ログアウト']) expect(html).toContain(item);
    // The area is a first-party client: no consent screen, and a success event names the console.
    const events = await s.db.prisma.loginEvent.findMany({ where: { submittedUserId: u.userId, result: 'success' } });
    expect(events.map((e) => e.clientId)).toContain('account-console-t1');
  });

  test('ログアウト ends the area session and the provider session', async () => {
    const u = await newUser();
    const agent = new Agent(s.issuer);
    const top = await signIn(agent, u);
    const html = await top.text();
    const out = await agent.post('/account/logout', { _csrf: csrfOf(html) });
    expect(out.status).toBe(303);
    expect(await confirmEndSession(agent, out)).toBe(`${s.issuer}/account/logged-out`);
    expect((await agent.get('/account/logged-out')).status).toBe(200);
    // Both sessions are gone: the area sends the user to sign in, and the provider asks for the user ID.
    const back = await agent.get('/account/');
    expect(back.status).toBe(303);
    expect(back.headers.get('location')).toMatch(/^\/account\/login/);
  });

  test('ログアウトしない keeps the area session and the provider session and returns to the area', async () => {
    const u = await newUser();
    const agent = new Agent(s.issuer);
    const top = await signIn(agent, u);
    const out = await agent.post('/account/logout', { _csrf: csrfOf(await top.text()) });
    const end = new URL(out.headers.get('location')!, s.issuer);
    const confirm = await (await agent.get(end.pathname + end.search)).text();
    // Do what a browser does on a click of ログアウトしない: follow its link, or submit the form it belongs to.
    const link = /<a[^>]*href="([^"]+)"[^>]*>ログアウトしない<\/a>/.exec(confirm);
    let res: Response;
    if (link) {
      res = await agent.get(link[1]!.replaceAll('&amp;', '&'));
    } else {
      const button = /<button([^>]*)>ログアウトしない<\/button>/.exec(confirm)![1]!;
      const xsrf = /name="xsrf" value="([^"]+)"/.exec(confirm)![1]!;
      const named = /name="([^"]+)" value="([^"]*)"/.exec(button);
      res = await follow(s, agent, await agent.post('/session/end/confirm', { xsrf, ...(named ? { [named[1]!]: named[2]! } : {}) }));
    }
    res = await follow(s, agent, res);
    const html = await res.text();
    expect(res.status).toBe(200);
    expect(html).not.toContain('ログアウトしました');
    expect(html).toContain('利用されている端末の管理が行えます。');
    // The area session is still there: the top page opens without a sign-in.
    const again = await agent.get('/account/');
    expect(again.status).toBe(200);
    // So is the provider session: signing in to the area again asks for nothing.
    let hop = await agent.get('/account/login?client_id=rp-basic');
    for (let i = 0; i < 20 && hop.headers.get('location'); i++) {
      const url = new URL(hop.headers.get('location')!, s.issuer);
      expect(url.pathname).not.toMatch(/^\/interaction\//);
      hop = await agent.get(url.pathname + url.search);
    }
    expect(hop.status).toBe(200);
    expect(await hop.text()).toContain('利用されている端末の管理が行えます。');
  });

  test('entering without a site, or for a tenant whose contract has no account area, gives a clear page', async () => {
    const agent = new Agent(s.issuer);
    const noSite = await agent.get('/account/login');
    expect(noSite.status).toBe(400);
    expect(await noSite.text()).toContain('ご利用のWebサイトのリンクからお入りください');
    const off = await agent.get('/account/login?client_id=rp-t2');
    expect(off.status).toBe(403);
    expect(await off.text()).toContain('アカウント管理サイトはご利用いただけません');
    expect((await agent.get('/account/login?client_id=nope')).status).toBe(400);
  });
});
