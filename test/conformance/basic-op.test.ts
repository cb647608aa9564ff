// OpenID Foundation conformance suite, plan oidcc-basic-certification-test-plan (Basic OP): each test
// is one module of the plan, named after it, with the checks the module makes. The suite's client is
// confidential and sends no PKCE.
import * as oidc from 'openid-client';
import { decodeJwt } from 'jose';
import { REDIRECT_URI, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent } from '../support/browser-less.js';
import {
  USER_INTERFACE_REQUIRED,
  authorize,
  authorizeAndSignIn,
  callbackOf,
  checkIdToken,
  clockPast,
  createUser,
  exchange,
  expectErrorAtRedirectUri,
  expectErrorPage,
  interactionOf,
  signInAt,
  suiteClients,
  type ConformanceUser,
} from '../support/conformance.js';

describe('Basic OP (oidcc-basic-certification-test-plan)', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  let rpPost: oidc.Configuration;
  let user: ConformanceUser;
  /** A browser already signed in (by oidcc-server's login), for the modules that need a session. */
  let signedIn: Agent;
  let firstIdToken: string;
  let firstAuthTime: number;

  beforeAll(async () => {
    s = await startTestServer();
    ({ basic: rp, post: rpPost } = await suiteClients(s));
    const u = uniqueUser('conf');
    user = await createUser(s, u.userId, u.email);
    signedIn = new Agent(s.issuer);
  });
  afterAll(() => s?.close());

  /** A full flow in a fresh browser: authorization, login with the mailed code, token request. */
  async function fullFlow(params: Record<string, string | undefined> = {}, client = rp, agent = new Agent(s.issuer)) {
    const { request, callback, loginShown } = await authorizeAndSignIn(s, client, user, agent, params);
    expect(loginShown).toBe(true);
    const tokens = await exchange(client, request, callback);
    const claims = await checkIdToken(client, tokens.id_token!, { nonce: request.nonce, accessToken: tokens.access_token });
    return { request, tokens, claims, agent };
  }

  /** The same, in the signed-in browser: no login page, a code straight away. */
  async function sessionFlow(params: Record<string, string | undefined> = {}) {
    const request = await authorize(rp, signedIn, params);
    const callback = callbackOf(request.res, s.issuer);
    expect(callback).toBeDefined();
    const tokens = await exchange(rp, request, callback!);
    const claims = await checkIdToken(rp, tokens.id_token!, { nonce: request.nonce, accessToken: tokens.access_token });
    expect(claims.sub).toBe(user.id);
    return { request, tokens, claims };
  }

  test('oidcc-server: code flow with client_secret_basic; ID token, state and token response checked', async () => {
    // The same client, watching the token endpoint's response headers (RFC 6749 5.1: no caching).
    const watched = new oidc.Configuration(rp.serverMetadata(), 'rp-basic', undefined, oidc.ClientSecretBasic('rp-basic-secret-0123456789'));
    oidc.allowInsecureRequests(watched);
    const tokenResponses: Response[] = [];
    watched[oidc.customFetch] = async (url, options) => {
      const res = await fetch(url, options as RequestInit);
      if (url === rp.serverMetadata().token_endpoint) tokenResponses.push(res.clone());
      return res;
    };
    const { tokens, claims } = await fullFlow({}, watched, signedIn);
    expect(tokenResponses).toHaveLength(1);
    expect(tokenResponses[0]!.status).toBe(200);
    expect(tokenResponses[0]!.headers.get('cache-control')).toMatch(/no-store/);
    expect(tokenResponses[0]!.headers.get('content-type')).toMatch(/application\/json/);
    expect(claims.sub).toBe(user.id);
    expect(tokens.scope?.split(' ') ?? ['openid']).toContain('openid');
    firstIdToken = tokens.id_token!;
    firstAuthTime = claims.auth_time as number;
  });

  test('oidcc-server-client-secret-post: the same flow with client_secret_post', async () => {
    const { claims } = await fullFlow({}, rpPost);
    expect(claims.sub).toBe(user.id);
    expect(claims.aud).toBe('rp-post');
  });

  test('oidcc-response-type-missing: an error at the redirect URI or an error page, never a code', async () => {
    const request = await authorize(rp, new Agent(s.issuer), { response_type: undefined });
    if (request.res.headers.get('location')) expectErrorAtRedirectUri(rp, request, ['invalid_request', 'unsupported_response_type']);
    else await expectErrorPage(request.res);
  });

  test('oidcc-idtoken-signature: the ID token is signed with an advertised algorithm and a kid of the JWKS', async () => {
    const { tokens } = await sessionFlow();
    await checkIdToken(rp, tokens.id_token!, { nonce: decodeJwt(tokens.id_token!).nonce as string });
  });

  test('oidcc-idtoken-unsigned: skipped by the suite, as alg none is not advertised for ID tokens', () => {
    expect(rp.serverMetadata().id_token_signing_alg_values_supported).not.toContain('none');
  });

  test('oidcc-userinfo-get: GET with the bearer header answers the subject of the ID token', async () => {
    const { tokens, claims } = await sessionFlow();
    const info = await oidc.fetchUserInfo(rp, tokens.access_token, claims.sub!);
    expect(info.sub).toBe(claims.sub);
  });

  test('oidcc-userinfo-post-header: POST with the bearer header', async () => {
    const { tokens, claims } = await sessionFlow();
    const res = await fetch(rp.serverMetadata().userinfo_endpoint!, { method: 'POST', headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    expect((await res.json()).sub).toBe(claims.sub);
  });

  test('oidcc-userinfo-post-body: POST with access_token in the form body (RFC 6750 2.2)', async () => {
    const { tokens, claims } = await sessionFlow();
    const res = await fetch(rp.serverMetadata().userinfo_endpoint!, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ access_token: tokens.access_token }).toString(),
    });
    expect(res.status).toBe(200);
    expect((await res.json()).sub).toBe(claims.sub);
  });

  test('oidcc-ensure-request-without-nonce-succeeds-for-code-flow: no nonce asked, none in the ID token', async () => {
    const { claims } = await sessionFlow({ nonce: undefined });
    expect(claims.nonce).toBeUndefined();
  });

  /** The claims a scope asks for, from userinfo (where the suite looks for them). */
  async function scopeFlow(scope: string) {
    const { tokens, claims } = await sessionFlow({ scope });
    const info = await oidc.fetchUserInfo(rp, tokens.access_token, claims.sub!);
    return { ...claims, ...info };
  }

  test('oidcc-scope-profile: scope profile returns profile claims', async () => {
    const claims = await scopeFlow('openid profile');
    expect(claims.preferred_username).toBe(user.userId);
  });

  test('oidcc-scope-email: scope email returns email and email_verified', async () => {
    const claims = await scopeFlow('openid email');
    expect(claims.email).toBe(user.email);
    expect(claims.email_verified).toBe(true);
  });

  test.each(['address', 'phone'])('oidcc-scope-%s: skipped by the suite, as the scope is not advertised', (scope) => {
    expect(rp.serverMetadata().scopes_supported).not.toContain(scope);
  });

  test('oidcc-scope-all: every advertised standard scope at once', async () => {
    const standard = ['profile', 'email', 'address', 'phone'].filter((sc) => rp.serverMetadata().scopes_supported?.includes(sc));
    const claims = await scopeFlow(['openid', ...standard].join(' '));
    expect(claims.preferred_username).toBe(user.userId);
    expect(claims.email).toBe(user.email);
  });

  test('oidcc-ensure-other-scope-order-succeeds: scope "email openid" works like "openid email"', async () => {
    const claims = await scopeFlow('email openid');
    expect(claims.email).toBe(user.email);
  });

  test.each(['page', 'popup'])('oidcc-display-%s: the display value is accepted and the login completes', async (display) => {
    await fullFlow({ display });
  });

  test('oidcc-prompt-login: prompt=login shows the login page again although signed in; auth_time is renewed', async () => {
    const { agent, claims: first } = await fullFlow();
    const request = await authorize(rp, agent, { prompt: 'login' });
    expect(interactionOf(request.res)).toBeTruthy();
    const tokens = await exchange(rp, request, await signInAt(s, request, user));
    const second = await checkIdToken(rp, tokens.id_token!, { nonce: request.nonce });
    expect(second.sub).toBe(first.sub);
    expect(second.auth_time).toBeGreaterThanOrEqual(first.auth_time as number);
  });

  test('oidcc-prompt-none-not-logged-in: login_required (or another user-interface error) at the redirect URI', async () => {
    const request = await authorize(rp, new Agent(s.issuer), { prompt: 'none' });
    expectErrorAtRedirectUri(rp, request, USER_INTERFACE_REQUIRED);
  });

  test('oidcc-prompt-none-logged-in: prompt=none in the signed-in browser returns a code with no page shown', async () => {
    const { claims } = await sessionFlow({ prompt: 'none' });
    expect(claims.auth_time).toBe(firstAuthTime);
  });

  test('oidcc-max-age-1: a session older than max_age=1 must log in again; auth_time is newer', async () => {
    const { agent, claims: first } = await fullFlow();
    // Whole seconds: the elapsed time must exceed max_age, so auth_time + 2 at the earliest.
    await clockPast((first.auth_time as number) + 2);
    const request = await authorize(rp, agent, { max_age: '1' });
    expect(interactionOf(request.res)).toBeTruthy();
    const tokens = await exchange(rp, request, await signInAt(s, request, user), { maxAge: 1 });
    const second = await checkIdToken(rp, tokens.id_token!, { nonce: request.nonce });
    expect(second.auth_time).toBeGreaterThan(first.auth_time as number);
  });

  test('oidcc-max-age-10000: a recent session is reused; auth_time is the original one', async () => {
    const { claims } = await sessionFlow({ max_age: '10000' });
    expect(claims.auth_time).toBe(firstAuthTime);
  });

  test('oidcc-ensure-request-with-unknown-parameter-succeeds: an unknown parameter is ignored', async () => {
    await sessionFlow({ extra: 'foobar' });
  });

  test('oidcc-id-token-hint: prompt=none with the previous ID token as id_token_hint returns a code', async () => {
    const { claims } = await sessionFlow({ prompt: 'none', id_token_hint: firstIdToken });
    expect(claims.sub).toBe(decodeJwt(firstIdToken).sub);
  });

  test('oidcc-login-hint: login_hint is accepted (and fills in the user ID field)', async () => {
    const agent = new Agent(s.issuer);
    const request = await authorize(rp, agent, { login_hint: user.userId });
    const page = await (await agent.get(`/interaction/${interactionOf(request.res)}`)).text();
    expect(page).toContain(`value="${user.userId}"`);
    await exchange(rp, request, await signInAt(s, request, user));
  });

  test('oidcc-ui-locales: ui_locales is accepted (and picks the page language)', async () => {
    const agent = new Agent(s.issuer);
    const request = await authorize(rp, agent, { ui_locales: 'en' });
    const page = await (await agent.get(`/interaction/${interactionOf(request.res)}`)).text();
    expect(page).toMatch(/<html lang="en"/);
    await exchange(rp, request, await signInAt(s, request, user));
  });

  test('oidcc-claims-locales: claims_locales is accepted', async () => {
    await sessionFlow({ claims_locales: 'se' });
  });

  test('oidcc-ensure-request-with-acr-values-succeeds: acr_values is accepted; acr is in the ID token', async () => {
    const { claims } = await sessionFlow({ acr_values: '1 2' });
    expect(typeof claims.acr).toBe('string');
  });

  test('oidcc-codereuse: the second use of a code is refused with invalid_grant', async () => {
    const request = await authorize(rp, signedIn);
    const callback = callbackOf(request.res, s.issuer)!;
    await exchange(rp, request, callback);
    await expect(oidc.authorizationCodeGrant(rp, callback, { expectedState: request.state, expectedNonce: request.nonce })).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  test('oidcc-codereuse-30seconds: reusing a code revokes the tokens it issued (RFC 6749 4.1.2)', async () => {
    const request = await authorize(rp, signedIn, { scope: 'openid offline_access' });
    const callback = callbackOf(request.res, s.issuer)!;
    const tokens = await exchange(rp, request, callback);
    expect(tokens.refresh_token).toBeTruthy();
    await expect(oidc.authorizationCodeGrant(rp, callback, { expectedState: request.state, expectedNonce: request.nonce })).rejects.toMatchObject({ error: 'invalid_grant' });
    await expect(oidc.fetchUserInfo(rp, tokens.access_token, oidc.skipSubjectCheck)).rejects.toMatchObject({ status: 401 });
    await expect(oidc.refreshTokenGrant(rp, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  test('oidcc-ensure-registered-redirect-uri: an unregistered redirect_uri gets an error page, no redirect', async () => {
    const request = await authorize(rp, new Agent(s.issuer), { redirect_uri: `${REDIRECT_URI}/not-registered` });
    await expectErrorPage(request.res);
  });

  // Fails: oidc-provider fills in a client's only registered redirect URI (its default
  // allowOmittingSingleRegisteredRedirectUri: true); OIDC Core 3.1.2.1 makes redirect_uri required.
  test('oidcc-ensure-redirect-uri-in-authorization-request: a request without redirect_uri is refused', async () => {
    const request = await authorize(rp, new Agent(s.issuer), { redirect_uri: undefined });
    if (request.res.headers.get('location')) expectErrorAtRedirectUri(rp, request, ['invalid_request']);
    else await expectErrorPage(request.res);
  });

  test('oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported: request_not_supported', async () => {
    expect(rp.serverMetadata().request_object_signing_alg_values_supported ?? []).not.toContain('none');
    const object = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ client_id: 'rp-basic', response_type: 'code', scope: 'openid', redirect_uri: REDIRECT_URI })).toString('base64url')}.`;
    const request = await authorize(rp, signedIn, { request: object });
    expectErrorAtRedirectUri(rp, request, ['request_not_supported']);
  });

  test('oidcc-request-uri-unsigned-supported-correctly-or-rejected-as-unsupported: request_uri_not_supported', async () => {
    expect(rp.serverMetadata().request_uri_parameter_supported).not.toBe(true);
    const request = await authorize(rp, signedIn, { request_uri: 'https://rp.example.test/request.jwt' });
    expectErrorAtRedirectUri(rp, request, ['request_uri_not_supported']);
  });

  test('oidcc-ensure-request-object-with-redirect-uri: skipped by the suite, as request objects are not supported', () => {
    expect(rp.serverMetadata().request_parameter_supported).not.toBe(true);
  });

  test('oidcc-claims-essential: an essential claim requested for userinfo is accepted', async () => {
    const claimsParam = JSON.stringify({ userinfo: { name: { essential: true }, email: { essential: true } } });
    const { tokens, claims } = await sessionFlow({ claims: claimsParam });
    const info = await oidc.fetchUserInfo(rp, tokens.access_token, claims.sub!);
    expect(info.sub).toBe(claims.sub);
    // The suite only warns when an essential claim the account has no value for is missing.
    expect(info.email).toBe(user.email);
  });

  test('oidcc-refresh-token: the refresh token gives new tokens, an ID token of the same subject, and only to its client', async () => {
    const { tokens, claims } = await sessionFlow({ scope: 'openid offline_access' });
    expect(tokens.refresh_token).toBeTruthy();
    const refreshed = await oidc.refreshTokenGrant(rp, tokens.refresh_token!);
    expect(refreshed.access_token).not.toBe(tokens.access_token);
    const again = await checkIdToken(rp, refreshed.id_token!, { nonce: claims.nonce as string, accessToken: refreshed.access_token });
    expect(again.sub).toBe(claims.sub);
    expect(again.auth_time).toBe(claims.auth_time);
    const info = await oidc.fetchUserInfo(rp, refreshed.access_token, claims.sub!);
    expect(info.sub).toBe(claims.sub);
    // Another client of the same tenant cannot use it.
    await expect(oidc.refreshTokenGrant(rpPost, refreshed.refresh_token ?? tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  test('oidcc-ensure-request-with-valid-pkce-succeeds: a confidential client that does send S256 PKCE signs in', async () => {
    const verifier = oidc.randomPKCECodeVerifier();
    const request = await authorize(rp, signedIn, { code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    const callback = callbackOf(request.res, s.issuer)!;
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: verifier, expectedState: request.state, expectedNonce: request.nonce });
    expect((await checkIdToken(rp, tokens.id_token!, { nonce: request.nonce })).sub).toBe(user.id);
  });
});
