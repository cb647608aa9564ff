// OpenID Foundation conformance suite, plan oidcc-backchannel-rp-initiated-logout-certification-test-plan:
// the site signs a user in, sends them to the end-session endpoint, and must receive a valid logout
// token at its backchannel_logout_uri as well as the browser at its post_logout_redirect_uri.
import * as oidc from 'openid-client';
import { decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { parseTenants } from '../../src/config/tenants.js';
import { POST_LOGOUT_URI, REDIRECT_URI, TEST_TENANTS_YAML, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent } from '../support/browser-less.js';
import { BACKCHANNEL_EVENT, startLogoutReceiver } from '../support/logout-receiver.js';
import {
  USER_INTERFACE_REQUIRED,
  authorize,
  authorizeAndSignIn,
  createUser,
  endSession,
  exchange,
  expectErrorAtRedirectUri,
  keysOf,
  locationOf,
  longState,
  type ConformanceUser,
} from '../support/conformance.js';

describe('Back-Channel Logout OP (oidcc-backchannel-rp-initiated-logout-certification-test-plan)', () => {
  let s: TestServer;
  let receiver: Awaited<ReturnType<typeof startLogoutReceiver>>;
  let rp: oidc.Configuration;
  let user: ConformanceUser;

  beforeAll(async () => {
    receiver = await startLogoutReceiver();
    // The suite's static client: a back-channel logout URI and a post-logout redirect URI.
    const site = `      - { client_id: rp-bcl, client_secret: rp-bcl-secret-0123456789, name: 通知サイト, redirect_uris: ['${REDIRECT_URI}'], post_logout_redirect_uris: ['${POST_LOGOUT_URI}'], backchannel_logout_uri: '${receiver.uri}' }\n`;
    s = await startTestServer({ tenants: parseTenants('t', TEST_TENANTS_YAML.replace('  - id: t2\n', `${site}  - id: t2\n`)) });
    rp = await oidc.discovery(new URL(s.issuer), 'rp-bcl', undefined, oidc.ClientSecretBasic('rp-bcl-secret-0123456789'), { execute: [oidc.allowInsecureRequests] });
    const u = uniqueUser('conf');
    user = await createUser(s, u.userId, u.email);
  });
  afterAll(async () => {
    await s?.close();
    await receiver?.close();
  });

  async function signIn() {
    const agent = new Agent(s.issuer);
    const { request, callback } = await authorizeAndSignIn(s, rp, user, agent);
    const tokens = await exchange(rp, request, callback);
    return { agent, idToken: tokens.id_token! };
  }

  /** The suite's checks on a logout token (Back-Channel Logout 1.0, 2.4 and 2.6). */
  async function checkLogoutToken(token: string, idToken: string) {
    const meta = rp.serverMetadata();
    const header = decodeProtectedHeader(token);
    expect(header.alg).not.toBe('none');
    expect(meta.id_token_signing_alg_values_supported).toContain(header.alg);
    const { payload } = await jwtVerify(token, keysOf(rp), { issuer: meta.issuer, audience: 'rp-bcl' });
    const now = Date.now() / 1000;
    expect(payload.iat).toBeLessThanOrEqual(now + 5);
    expect(payload.iat).toBeGreaterThan(now - 600);
    if (payload.exp !== undefined) expect(payload.exp).toBeGreaterThan(now);
    expect(typeof payload.jti).toBe('string');
    expect(payload.events).toEqual({ [BACKCHANNEL_EVENT]: {} });
    expect(payload.nonce).toBeUndefined();
    expect(payload.sub ?? payload.sid).toBeTruthy();
    const id = decodeJwt(idToken);
    if (payload.sub !== undefined) expect(payload.sub).toBe(id.sub);
    // backchannel_logout_session_required: the sid is in both, and the same.
    expect(payload.sid).toBeTruthy();
    expect(payload.sid).toBe(id.sid);
  }

  async function expectSignedOut(agent: Agent) {
    const request = await authorize(rp, agent, { prompt: 'none', state: longState() });
    expectErrorAtRedirectUri(rp, request, USER_INTERFACE_REQUIRED);
  }

  test('oidcc-backchannel-logout-discovery-endpoint-verification: back-channel logout with sid is advertised', () => {
    const meta = rp.serverMetadata();
    expect(meta.backchannel_logout_supported).toBe(true);
    expect(meta.backchannel_logout_session_supported).toBe(true);
    expect(meta.end_session_endpoint).toBeTruthy();
  });

  test('oidcc-backchannel-rp-initiated-logout: a valid logout token is posted, the browser returns with its state', async () => {
    const { agent, idToken } = await signIn();
    const before = receiver.tokens.length;
    const state = longState();
    const { final } = await endSession(rp, agent, { id_token_hint: idToken, post_logout_redirect_uri: POST_LOGOUT_URI, state });
    const back = locationOf(final, s.issuer)!;
    expect(back.origin + back.pathname).toBe(POST_LOGOUT_URI);
    expect([...back.searchParams.keys()]).toEqual(['state']);
    expect(back.searchParams.get('state')).toBe(state);
    await checkLogoutToken(await receiver.nth(before + 1), idToken);
    await expectSignedOut(agent);
  });

  test('oidcc-backchannel-rp-initiated-logout-no-post-logout-redirect-uri: the logout token is posted all the same', async () => {
    const { agent, idToken } = await signIn();
    const before = receiver.tokens.length;
    const { final } = await endSession(rp, agent, { id_token_hint: idToken });
    expect(locationOf(final, s.issuer)?.href.startsWith(POST_LOGOUT_URI)).not.toBe(true);
    await checkLogoutToken(await receiver.nth(before + 1), idToken);
    await expectSignedOut(agent);
  });
});
