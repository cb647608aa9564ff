// The OpenID Foundation conformance suite's relying party, reproduced: a confidential client that
// sends no PKCE, a browser that signs in with the mailed code, and the suite's checks on what comes back.
import { createHash } from 'node:crypto';
import * as oidc from 'openid-client';
import { createRemoteJWKSet, customFetch, decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import { REDIRECT_URI, type TestServer } from './harness.js';
import { Agent, followToCallback, submit, type StartedLogin } from './browser-less.js';

export interface ConformanceUser {
  id: string;
  userId: string;
  email: string;
}

/** Creates an active account of tenant t1 with one device. */
export async function createUser(s: TestServer, userId: string, email: string): Promise<ConformanceUser> {
  const account = await s.app.services.accounts.create({ tenantId: 't1', userId, devices: [{ email }] });
  return { id: account.id, userId, email };
}

/** One authorization request as the suite builds it; `undefined` leaves a default parameter out. */
export interface AuthorizationRequest {
  agent: Agent;
  state?: string;
  nonce?: string;
  res: Response;
}

export async function authorize(rp: oidc.Configuration, agent: Agent, params: Record<string, string | undefined> = {}): Promise<AuthorizationRequest> {
  const url = new URL(rp.serverMetadata().authorization_endpoint!);
  const all: Record<string, string | undefined> = {
    client_id: rp.clientMetadata().client_id,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope: 'openid',
    state: oidc.randomState(),
    nonce: oidc.randomNonce(),
    ...params,
  };
  for (const [k, v] of Object.entries(all)) if (v !== undefined) url.searchParams.set(k, v);
  const res = await agent.get(url.pathname + url.search);
  return { agent, state: all.state, nonce: all.nonce, res };
}

/** Where the authorization endpoint sent the browser: the login interaction, or back to the site. */
export function interactionOf(res: Response): string | undefined {
  return /\/interaction\/([^/?]+)/.exec(res.headers.get('location') ?? '')?.[1];
}

/** The redirect to the site's redirect URI, if the endpoint answered with one. */
export function callbackOf(res: Response, base: string): URL | undefined {
  const location = res.headers.get('location');
  if (!location) return undefined;
  const url = new URL(location, base);
  return url.href.startsWith(REDIRECT_URI) ? url : undefined;
}

/** Signs in at the login interaction with the mailed code; returns the redirect to the site. */
export async function signInAt(s: TestServer, request: AuthorizationRequest, user: ConformanceUser): Promise<URL> {
  const uid = interactionOf(request.res);
  if (!uid) throw new Error(`expected the login page, got ${request.res.status} ${request.res.headers.get('location')}`);
  const login: StartedLogin = { agent: request.agent, uid, interactionPath: `/interaction/${uid}`, verifier: '', state: request.state ?? '', nonce: request.nonce ?? '' };
  const before = s.smtp.messages.length;
  const identified = await submit(login, 'identify', { userId: user.userId });
  if (identified.status !== 303) throw new Error(`identify answered ${identified.status}`);
  const otp = await s.smtp.otpFor(user.email, before);
  return followToCallback(request.agent, await submit(login, 'otp', { otp }));
}

/** The authorization request and, if the login page is shown, the sign-in; `loginShown` says which. */
export async function authorizeAndSignIn(s: TestServer, rp: oidc.Configuration, user: ConformanceUser, agent: Agent, params: Record<string, string | undefined> = {}) {
  const request = await authorize(rp, agent, params);
  const direct = callbackOf(request.res, s.issuer);
  const callback = direct ?? (await signInAt(s, request, user));
  return { request, callback, loginShown: !direct };
}

/** The token request with the code (no code_verifier), and the suite's checks on the response. */
export async function exchange(rp: oidc.Configuration, request: AuthorizationRequest, callback: URL, opts: { maxAge?: number } = {}) {
  expect(callback.searchParams.get('error')).toBeNull();
  expect(callback.searchParams.get('state')).toBe(request.state ?? null);
  expect(callback.searchParams.get('code')).toBeTruthy();
  const tokens = await oidc.authorizationCodeGrant(rp, callback, {
    expectedState: request.state ?? oidc.skipStateCheck,
    expectedNonce: request.nonce,
    idTokenExpected: true,
    ...(opts.maxAge !== undefined ? { maxAge: opts.maxAge } : {}),
  });
  expect(tokens.token_type.toLowerCase()).toBe('bearer');
  expect(tokens.access_token).toBeTruthy();
  expect(tokens.expires_in).toBeGreaterThan(0);
  return tokens;
}

/** The provider's JWKS, fetched the way the client fetches (e.g. through a proxy). */
export function keysOf(rp: oidc.Configuration) {
  const viaClient = rp[oidc.customFetch];
  const jwksUri = new URL(rp.serverMetadata().jwks_uri!);
  return createRemoteJWKSet(jwksUri, viaClient ? { [customFetch]: (url, options) => viaClient(url, { ...options, headers: Object.fromEntries(options.headers), body: undefined }) } : {});
}

/** Verifies an ID token as the suite does (OIDC Core 3.1.3.7); returns its claims. */
export async function checkIdToken(rp: oidc.Configuration, idToken: string, expected: { nonce?: string; accessToken?: string }): Promise<JWTPayload> {
  const meta = rp.serverMetadata();
  const header = decodeProtectedHeader(idToken);
  expect(meta.id_token_signing_alg_values_supported).toContain(header.alg);
  expect(header.alg).not.toBe('none');
  expect(header.kid).toBeTruthy();
  const jwks = keysOf(rp);
  const { payload } = await jwtVerify(idToken, jwks, { issuer: meta.issuer, audience: rp.clientMetadata().client_id });
  const now = Date.now() / 1000;
  expect(typeof payload.sub).toBe('string');
  expect(payload.sub!.length).toBeGreaterThan(0);
  expect(payload.sub!.length).toBeLessThanOrEqual(255);
  expect(payload.exp).toBeGreaterThan(now);
  expect(payload.iat).toBeLessThanOrEqual(now + 5);
  expect(payload.iat).toBeGreaterThan(now - 600);
  if (Array.isArray(payload.aud) && payload.aud.length > 1) expect(payload.azp).toBe(rp.clientMetadata().client_id);
  if (expected.nonce === undefined) expect(payload.nonce).toBeUndefined();
  else expect(payload.nonce).toBe(expected.nonce);
  expect(typeof payload.auth_time).toBe('number');
  expect(payload.auth_time).toBeLessThanOrEqual(now + 5);
  if (payload.at_hash !== undefined && expected.accessToken) {
    const digest = createHash(`sha${header.alg!.slice(2)}`).update(expected.accessToken).digest();
    expect(payload.at_hash).toBe(digest.subarray(0, digest.length / 2).toString('base64url'));
  }
  return payload;
}

/** An error sent back to the redirect URI (OIDC Core 3.1.2.6): the code, with state and iss echoed. */
export function expectErrorAtRedirectUri(rp: oidc.Configuration, request: AuthorizationRequest, errors: string[]) {
  const back = callbackOf(request.res, rp.serverMetadata().issuer);
  expect(back?.origin + (back?.pathname ?? '')).toBe(REDIRECT_URI);
  expect(errors).toContain(back!.searchParams.get('error'));
  expect(back!.searchParams.get('code')).toBeNull();
  expect(back!.searchParams.get('state')).toBe(request.state ?? null);
  if (rp.serverMetadata().authorization_response_iss_parameter_supported) expect(back!.searchParams.get('iss')).toBe(rp.serverMetadata().issuer);
  return back!;
}

/** An error page at the provider: no redirect anywhere (the suite asks for a screenshot of it). */
export async function expectErrorPage(res: Response) {
  expect(res.status).toBeGreaterThanOrEqual(400);
  expect(res.status).toBeLessThan(500);
  expect(res.headers.get('location')).toBeNull();
  expect(res.headers.get('content-type')).toMatch(/text\/html/);
  return res.text();
}

/** Errors that say the request needs the user (OIDC Core 3.1.2.6), as the suite accepts after prompt=none. */
export const USER_INTERFACE_REQUIRED = ['login_required', 'interaction_required', 'consent_required', 'account_selection_required'];

/** Waits until the clock has moved past `epochSeconds` (for max_age), without a fixed sleep. */
export async function clockPast(epochSeconds: number) {
  while (Date.now() / 1000 <= epochSeconds) await new Promise((resolve) => setTimeout(resolve, 50));
}

/** The suite's static clients: client_secret_basic and client_secret_post. */
export async function suiteClients(s: TestServer) {
  const execute = [oidc.allowInsecureRequests];
  const basic = await oidc.discovery(new URL(s.issuer), 'rp-basic', undefined, oidc.ClientSecretBasic('rp-basic-secret-0123456789'), { execute });
  const post = await oidc.discovery(new URL(s.issuer), 'rp-post', undefined, oidc.ClientSecretPost('rp-post-secret-0123456789'), { execute });
  return { basic, post };
}

/** The end-session endpoint in a browser: the request, then the confirmation the user accepts if asked. */
export async function endSession(rp: oidc.Configuration, agent: Agent, params: Record<string, string>) {
  const url = new URL(rp.serverMetadata().end_session_endpoint!);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const first = await agent.get(url.pathname + url.search);
  if (first.status !== 200) return { first, final: first };
  const html = await first.text();
  const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)?.[1];
  if (!xsrf) return { first, final: first, html };
  const final = await agent.post(new URL(/action="([^"]+)"/.exec(html)?.[1] ?? '/session/end/confirm', url).pathname, { xsrf, logout: 'yes' });
  return { first, final };
}

/** Where a response redirects, as a full URL (or undefined). */
export function locationOf(res: Response, base: string): URL | undefined {
  const location = res.headers.get('location');
  return location ? new URL(location, base) : undefined;
}

/** A long random state, as the logout modules send, to catch a provider that truncates it. */
export function longState() {
  return (oidc.randomState() + oidc.randomState() + oidc.randomState() + oidc.randomState()).slice(0, 128);
}
