// OpenID Foundation conformance suite, plan oidcc-rp-initiated-logout-certification-test-plan: each
// module signs in, sends the browser to the end-session endpoint with some parameters, and checks
// where it ends up; a successful logout is then proven by prompt=none answering login_required.
import * as oidc from 'openid-client';
import { POST_LOGOUT_URI, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent } from '../support/browser-less.js';
import {
  USER_INTERFACE_REQUIRED,
  authorize,
  authorizeAndSignIn,
  createUser,
  endSession,
  exchange,
  expectErrorAtRedirectUri,
  expectErrorPage,
  locationOf,
  longState,
  suiteClients,
  type ConformanceUser,
} from '../support/conformance.js';

describe('RP-Initiated Logout OP (oidcc-rp-initiated-logout-certification-test-plan)', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  let user: ConformanceUser;

  beforeAll(async () => {
    s = await startTestServer();
    ({ basic: rp } = await suiteClients(s));
    const u = uniqueUser('conf');
    user = await createUser(s, u.userId, u.email);
  });
  afterAll(() => s?.close());

  /** A fresh browser signed in to the suite's client; its ID token. */
  async function signIn() {
    const agent = new Agent(s.issuer);
    const { request, callback } = await authorizeAndSignIn(s, rp, user, agent);
    const tokens = await exchange(rp, request, callback);
    return { agent, idToken: tokens.id_token! };
  }

  /** The second authorization of every module, with prompt=none: the user must be signed out. */
  async function expectSignedOut(agent: Agent) {
    const request = await authorize(rp, agent, { prompt: 'none', state: longState() });
    expectErrorAtRedirectUri(rp, request, USER_INTERFACE_REQUIRED);
  }

  /** And the opposite, for modules where the provider must not have ended the session. */
  async function expectStillSignedIn(agent: Agent) {
    const request = await authorize(rp, agent, { prompt: 'none' });
    expect(locationOf(request.res, s.issuer)?.searchParams.get('code')).toBeTruthy();
  }

  /** The provider's own "you are signed out" page, not a redirect to the site. */
  async function expectLoggedOutPage(final: Response, agent: Agent) {
    const next = locationOf(final, s.issuer);
    expect(next?.href.startsWith(POST_LOGOUT_URI)).not.toBe(true);
    const page = next ? await agent.get(next.pathname + next.search) : final;
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
  }

  /** A request the provider must not honour by redirecting: an error page, or a confirmation that leads nowhere else. */
  async function expectNoRedirectBack(rpParams: Record<string, string>, agent: Agent) {
    const { first, final } = await endSession(rp, agent, rpParams);
    if (first.status !== 200) await expectErrorPage(first);
    expect(locationOf(final, s.issuer)?.href.startsWith(POST_LOGOUT_URI)).not.toBe(true);
    expect(locationOf(final, s.issuer)?.origin ?? s.issuer).toBe(s.issuer);
  }

  test('oidcc-rp-initiated-logout-discovery-endpoint-verification: end_session_endpoint is advertised', () => {
    const endpoint = new URL(rp.serverMetadata().end_session_endpoint!);
    expect(endpoint.origin).toBe(s.issuer);
  });

  test('oidcc-rp-initiated-logout: back to post_logout_redirect_uri with the exact state and nothing else', async () => {
    const { agent, idToken } = await signIn();
    const state = longState();
    const { final } = await endSession(rp, agent, { id_token_hint: idToken, post_logout_redirect_uri: POST_LOGOUT_URI, state });
    expect(final.status).toBe(303);
    const back = locationOf(final, s.issuer)!;
    expect(back.origin + back.pathname).toBe(POST_LOGOUT_URI);
    expect([...back.searchParams.keys()]).toEqual(['state']);
    expect(back.searchParams.get('state')).toBe(state);
    await expectSignedOut(agent);
  });

  test('oidcc-rp-initiated-logout-bad-post-logout-redirect-uri: an unregistered URI gets an error page, no redirect', async () => {
    const { agent, idToken } = await signIn();
    await expectNoRedirectBack({ id_token_hint: idToken, post_logout_redirect_uri: `${POST_LOGOUT_URI}/not-registered`, state: longState() }, agent);
  });

  test('oidcc-rp-initiated-logout-modified-id-token-hint: a tampered id_token_hint gets an error page, no redirect', async () => {
    const { agent, idToken } = await signIn();
    const [h, p, sig] = idToken.split('.') as [string, string, string];
    const i = Math.floor(sig.length / 2);
    const tampered = `${h}.${p}.${sig.slice(0, i)}${sig[i] === 'A' ? 'B' : 'A'}${sig.slice(i + 1)}`;
    await expectNoRedirectBack({ id_token_hint: tampered, post_logout_redirect_uri: POST_LOGOUT_URI, state: longState() }, agent);
  });

  test('oidcc-rp-initiated-logout-no-id-token-hint: post_logout_redirect_uri without id_token_hint is not followed', async () => {
    const { agent } = await signIn();
    await expectNoRedirectBack({ post_logout_redirect_uri: POST_LOGOUT_URI, state: longState() }, agent);
  });

  test('oidcc-rp-initiated-logout-no-params: the user confirms, is signed out and sees the logged-out page', async () => {
    const { agent } = await signIn();
    const { first, final } = await endSession(rp, agent, {});
    expect(first.status).toBe(200);
    await expectLoggedOutPage(final, agent);
    await expectSignedOut(agent);
  });

  test('oidcc-rp-initiated-logout-no-post-logout-redirect-uri: id_token_hint and state only: logged-out page, no redirect', async () => {
    const { agent, idToken } = await signIn();
    const { final } = await endSession(rp, agent, { id_token_hint: idToken, state: longState() });
    await expectLoggedOutPage(final, agent);
    await expectSignedOut(agent);
  });

  test('oidcc-rp-initiated-logout-no-state: back to post_logout_redirect_uri without a state', async () => {
    const { agent, idToken } = await signIn();
    const { final } = await endSession(rp, agent, { id_token_hint: idToken, post_logout_redirect_uri: POST_LOGOUT_URI });
    const back = locationOf(final, s.issuer)!;
    expect(back.origin + back.pathname).toBe(POST_LOGOUT_URI);
    expect([...back.searchParams.keys()]).toEqual([]);
    await expectSignedOut(agent);
  });

  test('oidcc-rp-initiated-logout-only-state: state alone: the user is signed out, logged-out page, no redirect', async () => {
    const { agent } = await signIn();
    const { final } = await endSession(rp, agent, { state: longState() });
    await expectLoggedOutPage(final, agent);
    await expectSignedOut(agent);
  });

  test('oidcc-rp-initiated-logout-query-added-to-post-logout-redirect-uri: a registered URI plus ?foo=bar is not followed', async () => {
    const { agent, idToken } = await signIn();
    await expectNoRedirectBack({ id_token_hint: idToken, post_logout_redirect_uri: `${POST_LOGOUT_URI}?foo=bar`, state: longState() }, agent);
    await expectStillSignedIn(agent);
  });
});
