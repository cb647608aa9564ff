// passport-openidconnect (Jared Hanson's Passport strategy; sends no PKCE) signs a user in with the
// mailed code, set up as its README shows: express-session for the state, the profile from userinfo.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import session from 'express-session';
import passport from 'passport';
import OpenIDConnectStrategy, { type Profile, type VerifyCallback } from 'passport-openidconnect';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Browser, relyingPartyTenants, signInAtProvider } from '../support/relying-party.js';

describe('passport-openidconnect signs in against the provider', () => {
  let s: TestServer;
  let rp: Server;
  let site: string;
  let account: { id: string };
  const user = uniqueUser('ppt');

  beforeAll(async () => {
    rp = createServer();
    await new Promise<void>((resolve) => rp.listen(0, '127.0.0.1', resolve));
    site = `http://127.0.0.1:${(rp.address() as AddressInfo).port}`;
    const client = { id: 'passport-site', secret: 'passport-site-secret-0123456789' };
    s = await startTestServer({ tenants: relyingPartyTenants({ ...client, redirectUri: `${site}/oauth2/redirect` }) });
    account = await s.app.services.accounts.create({ tenantId: 'rp', userId: user.userId, devices: [{ email: user.email }] });

    // A Passport instance of its own, so the test leaves the module's singleton alone.
    const auth = new passport.Passport();
    auth.use(
      new OpenIDConnectStrategy(
        {
          issuer: s.issuer,
          authorizationURL: `${s.issuer}/auth`,
          tokenURL: `${s.issuer}/token`,
          userInfoURL: `${s.issuer}/me`,
          clientID: client.id,
          clientSecret: client.secret,
          callbackURL: `${site}/oauth2/redirect`,
          scope: ['profile'],
        },
        (issuer: string, profile: Profile, done: VerifyCallback) => done(null, { issuer, id: profile.id, username: profile.username }),
      ),
    );
    auth.serializeUser((u, done) => done(null, u));
    auth.deserializeUser((u: Express.User, done) => done(null, u));

    const app = express();
    app.use(session({ secret: 'a-session-secret-for-the-test', resave: false, saveUninitialized: false }));
    app.use(auth.authenticate('session'));
    app.get('/login', auth.authenticate('openidconnect'));
    app.get('/oauth2/redirect', auth.authenticate('openidconnect', { successReturnToOrRedirect: '/', failureRedirect: '/login', keepSessionInfo: true }));
    app.get('/profile', (req, res) => {
      if (!req.user) {
        (req.session as unknown as { returnTo?: string }).returnTo = req.originalUrl;
        return res.redirect('/login');
      }
      res.json(req.user);
    });
    rp.on('request', app);
  });

  afterAll(async () => {
    rp?.closeAllConnections();
    await new Promise<void>((resolve) => (rp ? rp.close(() => resolve()) : resolve()));
    await s?.close();
  });

  test('the protected page, the login with the mailed code (no PKCE), then the user on the page', async () => {
    const browser = new Browser();
    const loginPage = await browser.open(`${site}/profile`);
    expect(loginPage.url.origin).toBe(s.issuer);
    const authorize = browser.visited.find((u) => u.origin === s.issuer && u.pathname === '/auth')!;
    expect(authorize.searchParams.get('code_challenge')).toBeNull();

    const back = await signInAtProvider(browser, s, loginPage, user);
    expect(back.url.href).toBe(`${site}/profile`);
    expect(back.res.status).toBe(200);
    expect(await back.res.json()).toEqual({ issuer: s.issuer, id: account.id, username: user.userId });
  });
});
