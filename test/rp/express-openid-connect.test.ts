// express-openid-connect (Auth0's Express middleware) signs a user in with the mailed code, and signs
// out at the provider (RP-initiated logout), configured as its README shows, for the code flow.
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Browser, freePort, relyingPartyTenants, signInAtProvider, startNodeSite, type ChildSite } from '../support/relying-party.js';

describe('express-openid-connect signs in against the provider', () => {
  let s: TestServer;
  let rp: ChildSite;
  let site: string;
  let account: { id: string };
  const user = uniqueUser('eoc');

  beforeAll(async () => {
    const port = await freePort();
    site = `http://127.0.0.1:${port}`;
    const client = { id: 'express-site', secret: 'express-site-secret-0123456789' };
    s = await startTestServer({ tenants: relyingPartyTenants({ ...client, redirectUri: `${site}/callback`, postLogoutRedirectUri: site }) });
    account = await s.app.services.accounts.create({ tenantId: 'rp', userId: user.userId, devices: [{ email: user.email }] });
    rp = await startNodeSite('test/rp/sites/express-openid-connect.site.ts', { ISSUER: s.issuer, PORT: String(port), CLIENT_ID: client.id, CLIENT_SECRET: client.secret }, `${site}/`);
  });

  afterAll(async () => {
    await rp?.close();
    await s?.close();
  });

  test('the protected page, the login with the mailed code, the user on the page, then logout at the provider', async () => {
    const browser = new Browser();
    const loginPage = await browser.open(`${site}/profile`);
    expect(loginPage.url.origin).toBe(s.issuer);
    const authorize = browser.visited.find((u) => u.origin === s.issuer && u.pathname === '/auth')!;
    expect(authorize.searchParams.get('code_challenge_method')).toBe('S256');

    const back = await signInAtProvider(browser, s, loginPage, user);
    expect(back.url.href).toBe(`${site}/profile`);
    expect(back.res.status).toBe(200);
    const profile = (await back.res.json()) as Record<string, unknown>;
    expect(profile).toMatchObject({ sub: account.id, preferred_username: user.userId });
    // The code went through the callback (authorization code flow), not a fragment or form post.
    expect(browser.visited.some((u) => u.href.startsWith(`${site}/callback?code=`))).toBe(true);

    // /logout ends the site's session and sends the user to the provider's end-session endpoint.
    const confirm = await browser.open(`${site}/logout`);
    expect(confirm.url.origin + confirm.url.pathname).toBe(`${s.issuer}/session/end`);
    expect(confirm.url.searchParams.get('post_logout_redirect_uri')).toBe(site);
    const html = await confirm.res.text();
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)?.[1];
    expect(xsrf).toBeTruthy();
    const home = await browser.follow(await browser.post(`${s.issuer}/session/end/confirm`, { xsrf: xsrf!, logout: 'yes' }));
    expect(home.url.href).toBe(`${site}/`);
    expect(await home.res.text()).toBe('signed out');

    // Both sessions are gone: the protected page leads to the provider's login form again.
    const again = await browser.open(`${site}/profile`);
    expect(again.url.pathname).toMatch(/^\/interaction\//);
    expect(await again.res.text()).toContain('name="userId"');
  });
});
