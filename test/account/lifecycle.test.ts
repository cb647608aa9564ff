import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { decodeJwt } from 'jose';
import * as oidc from 'openid-client';
import { hashSecret, normalizeAnswer } from '../../src/credentials/hashing.js';
import { signInToArea } from '../support/account-area.js';
import { Agent, csrfOf, discover, followToCallback, startLogin, submit } from '../support/browser-less.js';
import { REDIRECT_URI, startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { startLogoutReceiver, tenantsWithBackchannel } from '../support/logout-receiver.js';

// t1 offers every method, so method changes and password accounts can be tested; rp-bcl (t1) has a
// back-channel logout URI.
const YAML = TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, password, password_otp]');
const PASSWORD = 'Hoshizora-Kujira 58';
const NEW_PASSWORD = 'Yuugure-Kamome 73';
const API = '/api/v1';

// ajv-formats is CommonJS: under ESM its default export is module.exports, whose `default` is the plugin.
const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule) as unknown as (ajv: Ajv2020) => void;

type Tokens = oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers;

describe('account lifecycle: no session or token outlives a lock, a reset, a re-activation, a method change or a delete', () => {
  let s: TestServer;
  let receiver: Awaited<ReturnType<typeof startLogoutReceiver>>;
  let bcl: oidc.Configuration;
  let backoffice: string;

  beforeAll(async () => {
    receiver = await startLogoutReceiver();
    s = await startTestServer({ tenants: tenantsWithBackchannel(receiver.uri, YAML) });
    bcl = await discover(s.issuer, 'rp-bcl', 'rp-bcl-secret-0123456789');
    const bo = await discover(s.issuer, 'backoffice-t1', 'backoffice-t1-secret-0123456789');
    backoffice = (await oidc.clientCredentialsGrant(bo, { scope: 'management' })).access_token;
  });
  afterAll(async () => {
    await s?.close();
    await receiver?.close();
  });

  /** An active t1 account with a secret question; `method` other than otp gets PASSWORD. */
  async function newUser(method: 'otp' | 'password' | 'password_otp' = 'otp') {
    const u = uniqueUser('life');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }], loginMethod: method });
    await s.app.services.accounts.setSecretQuestion(account.id, 'first_pet', await hashSecret(normalizeAnswer('ポチ')));
    if (method !== 'otp') await s.app.services.accounts.setPassword(account.id, await hashSecret(PASSWORD));
    return { ...u, id: account.id, method };
  }

  /** A full login at the site with a back-channel logout URI: the browser, its tokens and the ID token's sid. */
  async function signIn(u: { userId: string; email: string; method: string }, password = PASSWORD, agent?: Agent) {
    const login = await startLogin(bcl, s.issuer, { scope: 'openid profile email' }, agent);
    const before = s.smtp.messages.length;
    expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
    let res: Response;
    if (u.method === 'otp') res = await submit(login, 'otp', { otp: await s.smtp.otpFor(u.email, before) });
    else res = await submit(login, 'password', { password });
    expect(res.status).toBe(303);
    const callback = await followToCallback(login.agent, res);
    const tokens: Tokens = await oidc.authorizationCodeGrant(bcl, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    const sid = tokens.claims()!.sid as string;
    expect(sid).toBeTruthy();
    return { agent: login.agent, tokens, sid };
  }

  /** prompt=none at the site from this browser: the callback URL (a code, or an error). */
  async function silent(agent: Agent): Promise<URL> {
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(bcl, {
      redirect_uri: REDIRECT_URI,
      scope: 'openid',
      prompt: 'none',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state: oidc.randomState(),
    });
    return followToCallback(agent, await agent.get(url.pathname + url.search));
  }

  /** Everything that worked before works: silent sign-in, userinfo, introspection. */
  async function expectLive(session: { agent: Agent; tokens: Tokens }) {
    expect((await silent(session.agent)).searchParams.get('code')).toBeTruthy();
    expect((await oidc.tokenIntrospection(bcl, session.tokens.access_token)).active).toBe(true);
    expect((await oidc.fetchUserInfo(bcl, session.tokens.access_token, oidc.skipSubjectCheck)).sub).toBeTruthy();
  }

  /** The session signs in nobody and every token of it is dead. */
  async function expectEnded(session: { agent: Agent; tokens: Tokens }) {
    expect((await silent(session.agent)).searchParams.get('error')).toBe('login_required');
    expect((await oidc.tokenIntrospection(bcl, session.tokens.access_token)).active).toBe(false);
    expect((await oidc.tokenIntrospection(bcl, session.tokens.refresh_token!)).active).toBe(false);
    await expect(oidc.fetchUserInfo(bcl, session.tokens.access_token, oidc.skipSubjectCheck)).rejects.toBeDefined();
    await expect(oidc.refreshTokenGrant(bcl, session.tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
  }

  /** The site's back-channel endpoint was told that this session of the account ended. */
  async function expectLogoutToken(count: number, u: { id: string }, sid: string) {
    const token = decodeJwt(await receiver.nth(count + 1));
    expect(token).toMatchObject({ sub: u.id, sid, aud: 'rp-bcl', iss: s.issuer });
  }

  async function api(method: string, path: string, body?: unknown) {
    const res = await fetch(new URL(`${API}${path}`, s.issuer), {
      method,
      headers: { authorization: `Bearer ${backoffice}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const json = (res.status === 204 ? {} : await res.json()) as Record<string, any>;
    return { status: res.status, type: res.headers.get('content-type'), body: json };
  }

  const account = async (id: string) => (await s.app.services.accounts.findById(id))!;

  test('a lock from wrong codes at a login in another browser ends the session, its tokens, and tells the site', async () => {
    const u = await newUser();
    const session = await signIn(u);
    await expectLive(session);
    const count = receiver.tokens.length;

    const attacker = await startLogin(bcl, s.issuer);
    expect((await submit(attacker, 'identify', { userId: u.userId })).status).toBe(303);
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await submit(attacker, 'otp', { otp: '00000000' })).status);
    expect(statuses.at(-1)).toBe(403);
    expect((await account(u.id)).lockedAt).not.toBeNull();

    await expectLogoutToken(count, u, session.sid);
    await expectEnded(session);
  });

  test('a lock written straight to the database (no session ended) still stops refresh, userinfo, introspection and silent sign-in', async () => {
    const u = await newUser();
    const session = await signIn(u);
    await s.db.prisma.account.update({ where: { id: u.id }, data: { lockedAt: new Date(), failedAttempts: 5 } });
    await expectEnded(session);
  });

  test('a pending account (sent back to activation) holds no token either', async () => {
    const u = await newUser();
    const session = await signIn(u);
    await s.db.prisma.account.update({ where: { id: u.id }, data: { status: 'pending_activation' } });
    await expectEnded(session);
  });

  test('re-activation through the management API ends the sessions and tells the site', async () => {
    const u = await newUser();
    const session = await signIn(u);
    const count = receiver.tokens.length;
    const res = await api('POST', `/accounts/${u.userId}/activation`);
    expect(res.status).toBe(200);
    await expectLogoutToken(count, u, session.sid);
    await expectEnded(session);
  });

  test('a password reset through recovery ends the sessions, and resets the failure counter', async () => {
    const u = await newUser('password');
    const session = await signIn(u);
    // Two wrong passwords at another login first.
    const other = await startLogin(bcl, s.issuer);
    await submit(other, 'identify', { userId: u.userId });
    for (let i = 0; i < 2; i++) expect((await submit(other, 'password', { password: 'not-the-password' })).status).toBe(401);
    expect((await account(u.id)).failedAttempts).toBe(2);
    const count = receiver.tokens.length;

    const l = await startLogin(bcl, s.issuer);
    const entry = await l.agent.get(`${l.interactionPath}/recovery`);
    await l.agent.get(entry.headers.get('location')!);
    const send = (action: string, fields: Record<string, string>) => l.agent.post(`${l.interactionPath}/recovery/${action}`, { _csrf: l.agent.cookies.get('csrf')!, ...fields });
    const before = s.smtp.messages.length;
    expect((await send('identify', { userId: u.userId })).status).toBe(303);
    expect((await send('code', { otp: await s.smtp.otpFor(u.email, before) })).status).toBe(303);
    expect((await send('question', { answer: 'ポチ' })).status).toBe(303);
    expect((await send('password', { password: NEW_PASSWORD, confirm: NEW_PASSWORD })).headers.get('location')).toMatch(/\/done$/);

    expect((await account(u.id)).failedAttempts).toBe(0);
    await expectLogoutToken(count, u, session.sid);
    await expectEnded(session);
    // The new password signs in.
    await expectLive(await signIn(u, NEW_PASSWORD));
  });

  test('a login-method change through the management API ends the sessions (the account keeps its password)', async () => {
    const u = await newUser('password');
    const session = await signIn(u);
    const count = receiver.tokens.length;
    const res = await api('PATCH', `/accounts/${u.userId}`, { loginMethod: 'otp' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ loginMethod: 'otp', status: 'active' });
    expect(res.body.activation).toBeUndefined();
    await expectLogoutToken(count, u, session.sid);
    await expectEnded(session);
  });

  test('a login-method change in the account area ends the other sessions; the browser that made it stays signed in', async () => {
    const u = await newUser();
    const site = await signIn(u);
    const area = new Agent(s.issuer);
    await signInToArea(s, area, u);
    const count = receiver.tokens.length;
    const page = await area.get('/account/login-method');
    expect(page.status).toBe(200);
    const done = await area.post('/account/login-method/execute', { _csrf: csrfOf(await page.text()), method: 'password', password: NEW_PASSWORD, confirm: NEW_PASSWORD });
    expect(done.status).toBe(200);
    expect((await account(u.id)).loginMethod).toBe('password');

    await expectLogoutToken(count, u, site.sid);
    await expectEnded(site);
    expect((await area.get('/account/')).status).toBe(200);
  });

  test('a request that read the session and grant before the access ended cannot store them again afterwards', async () => {
    const u = await newUser();
    const session = await signIn(u);
    // What an authorization request in flight holds (oidc-provider saves the session at the end of every
    // request that used it, and a first-party grant at every authorization): the rows as it read them.
    const held = await s.db.sql.query<{ id: string; type: string; payload: Record<string, unknown>; expires_at: Date }>(
      `SELECT id, type, payload, expires_at FROM oidc_payloads WHERE payload->>'accountId' = $1 AND type IN ('Session', 'Grant')`,
      [u.id],
    );
    expect(held.map((r) => r.type).sort()).toEqual(['Grant', 'Session']);
    const stored = async () =>
      (await s.db.sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM oidc_payloads WHERE payload->>'accountId' = $1 AND type IN ('Session', 'Grant')`, [u.id]))[0]!.n;

    await s.app.services.lifecycle.endAccess(u.id, 'staff_signed_out');
    expect(await stored()).toBe(0);

    // Its saves arrive now, through the adapter's two paths: held to the request's end, and at once.
    const payloads = s.app.services.payloads;
    const expiresIn = (r: { expires_at: Date }) => Math.ceil((new Date(r.expires_at).getTime() - Date.now()) / 1000);
    await payloads.withDeferredWrites(async () => {
      for (const r of held) await payloads.upsert(r.type, r.id, r.payload, expiresIn(r));
    });
    for (const r of held) await payloads.upsert(r.type, r.id, r.payload, expiresIn(r));
    expect(await stored()).toBe(0);
    await expectEnded(session);

    // A new login afterwards, in the same browser, is a new session and grant, stored as usual;
    // signing out that one session alone (the account area's sign-out of another browser) sticks the
    // same way.
    const again = await signIn(u, PASSWORD, session.agent);
    await expectLive(again);
    const heldAgain = await s.db.sql.query<{ id: string; type: string; payload: Record<string, unknown>; expires_at: Date }>(
      `SELECT id, type, payload, expires_at FROM oidc_payloads WHERE payload->>'accountId' = $1 AND type IN ('Session', 'Grant')`,
      [u.id],
    );
    const uid = heldAgain.find((r) => r.type === 'Session')!.payload.uid as string;
    expect(await s.app.services.providerSessions.deleteSession(u.id, uid)).toBeDefined();
    for (const r of heldAgain) await payloads.upsert(r.type, r.id, r.payload, expiresIn(r));
    expect(await stored()).toBe(0);
    await expectEnded(again);

    // The marks go with housekeeping once their hour is over, not before.
    const ids = [...held, ...heldAgain].map((r) => r.id);
    const marks = async () => (await s.db.sql.query<{ n: number }>('SELECT count(*)::int AS n FROM oidc_revoked WHERE id = ANY($1)', [ids]))[0]!.n;
    expect(await marks()).toBe(4);
    await payloads.purgeExpired(new Date(), { batchSize: 100, pauseMs: 0 });
    expect(await marks()).toBe(4);
    await s.db.sql.query(`UPDATE oidc_revoked SET expires_at = now() - interval '1 second' WHERE id = ANY($1)`, [ids]);
    await payloads.purgeExpired(new Date(), { batchSize: 100, pauseMs: 0 });
    expect(await marks()).toBe(0);
  });

  test('deleting the account through the management API tells the site and leaves no working token', async () => {
    const u = await newUser();
    const session = await signIn(u);
    const count = receiver.tokens.length;
    expect((await api('DELETE', `/accounts/${u.userId}`)).status).toBe(204);
    await expectLogoutToken(count, u, session.sid);
    await expectEnded(session);
  });

  test('PATCH to a password method the account has no password for sends it through activation, which asks for one', async () => {
    const u = await newUser();
    const session = await signIn(u);
    const res = await api('PATCH', `/accounts/${u.userId}`, { loginMethod: 'password' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ loginMethod: 'password', status: 'pending_activation', activation: { mailed: false } });
    expect(res.body.activation.otp).toMatch(/^\d{8}$/);
    // As the OpenAPI document says.
    const ajv = new Ajv2020({ strict: false });
    addFormats(ajv);
    ajv.addSchema((await (await fetch(`${s.issuer}${API}/openapi.json`)).json()) as object, 'api');
    const validate = ajv.getSchema('api#/components/schemas/UpdatedAccount')!;
    expect(validate(res.body) ? 'valid' : ajv.errorsText(validate.errors)).toBe('valid');
    await expectEnded(session);

    // No login counts towards the lockout meanwhile: the ID is not live.
    const agent = new Agent(s.issuer);
    const activationPath = new URL(res.body.activation.url as string).pathname;
    const verifyPage = await agent.get(activationPath);
    expect((await agent.post(activationPath, { _csrf: csrfOf(await verifyPage.text()), userId: u.userId, otp: res.body.activation.otp as string })).status).toBe(303);
    const register = await (await agent.get(`${activationPath}/register`)).text();
    expect(register).toContain('name="password"');
    const registered = await agent.post(`${activationPath}/register`, { _csrf: csrfOf(register), questionId: 'first_pet', answer: 'ポチ', password: NEW_PASSWORD, confirm: NEW_PASSWORD });
    expect(registered.status).toBe(303);
    expect(await account(u.id)).toMatchObject({ status: 'active', failedAttempts: 0 });
    await expectLive(await signIn({ ...u, method: 'password' }, NEW_PASSWORD));
  });
});

describe('introspection and revocation stay within the tenant', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer();
  });
  afterAll(async () => {
    await s?.close();
  });

  test("only the token's own client and its tenant's resource servers learn about a token; others can't revoke it", async () => {
    const u = uniqueUser('intro');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const login = await startLogin(rp, s.issuer);
    const before = s.smtp.messages.length;
    await submit(login, 'identify', { userId: u.userId });
    const done = await submit(login, 'otp', { otp: await s.smtp.otpFor(u.email, before) });
    const tokens = await oidc.authorizationCodeGrant(rp, await followToCallback(login.agent, done), { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });

    const as = (clientId: string, secret: string) => discover(s.issuer, clientId, secret);
    const own = await oidc.tokenIntrospection(rp, tokens.access_token);
    expect(own).toMatchObject({ active: true, client_id: 'rp-basic' });
    // The same tenant's back office (client_credentials, so a resource server by default).
    const sameTenantBackoffice = await oidc.tokenIntrospection(await as('backoffice-t1', 'backoffice-t1-secret-0123456789'), tokens.access_token);
    expect(sameTenantBackoffice).toMatchObject({ active: true, client_id: 'rp-basic', sub: expect.any(String) });
    // Another site of the same tenant is no resource server; clients of another tenant never learn anything.
    expect(await oidc.tokenIntrospection(await as('rp-post', 'rp-post-secret-0123456789'), tokens.access_token)).toEqual({ active: false });
    expect(await oidc.tokenIntrospection(await as('backoffice-t2', 'backoffice-t2-secret-0123456789'), tokens.access_token)).toEqual({ active: false });
    expect(await oidc.tokenIntrospection(await as('rp-t2', 'rp-t2-secret-01234567890'), tokens.refresh_token!)).toEqual({ active: false });

    // Revocation by another tenant's client answers like an unknown token and revokes nothing.
    const foreign = await as('rp-t2', 'rp-t2-secret-01234567890');
    await oidc.tokenRevocation(foreign, tokens.access_token);
    await oidc.tokenRevocation(foreign, tokens.refresh_token!);
    expect((await oidc.tokenIntrospection(rp, tokens.access_token)).active).toBe(true);
    const refreshed = await oidc.refreshTokenGrant(rp, tokens.refresh_token!);
    expect(refreshed.access_token).toBeTruthy();
  });
});
