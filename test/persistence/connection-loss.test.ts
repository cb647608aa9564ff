// The database drops every connection of the provider (a failover, a restart, an idle-timeout proxy):
// the next requests reconnect, and none of them fails.
import pg from 'pg';
import * as oidc from 'openid-client';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { discover, followToCallback, startLogin, submit } from '../support/browser-less.js';

describe('database connections terminated under a running provider', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  beforeAll(async () => {
    s = await startTestServer();
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(() => s?.close());

  async function terminateAll(): Promise<number> {
    const url = new URL(s.config.databaseUrl!);
    const admin = new pg.Client({ host: url.hostname, port: Number(url.port), user: decodeURIComponent(url.username), database: 'postgres' });
    await admin.connect();
    try {
      const r = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [url.pathname.slice(1)]);
      return r.rowCount ?? 0;
    } finally {
      await admin.end();
    }
  }

  async function login(userId: string, email: string): Promise<void> {
    const before = s.smtp.messages.length;
    const started = await startLogin(rp, s.issuer);
    expect((await submit(started, 'identify', { userId })).status).toBe(303);
    const otp = await s.smtp.otpFor(email, before);
    const res = await submit(started, 'otp', { otp });
    expect(res.status).toBe(303);
    const callback = await followToCallback(started.agent, res);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: started.verifier, expectedState: started.state, expectedNonce: started.nonce });
    expect(tokens.claims()?.preferred_username).toBe(userId);
  }

  test('every request after the connections were cut succeeds', async () => {
    const u = uniqueUser('pgcut');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    await login(u.userId, u.email);
    expect(await terminateAll()).toBeGreaterThan(0);
    // No retry loop: the very next login, and every step in it, must work.
    await login(u.userId, u.email);
    expect(await terminateAll()).toBeGreaterThan(0);
    const discovery = await fetch(new URL('/.well-known/openid-configuration', s.issuer));
    expect(discovery.status).toBe(200);
    await login(u.userId, u.email);
  });
});
