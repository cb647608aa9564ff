import http from 'node:http';
import { performance } from 'node:perf_hooks';
import * as oidc from 'openid-client';
import type { OtpSink } from './otp-sink.js';

export const REDIRECT_URI = 'http://127.0.0.1/cb';
/** Without any bytes of an answer for this long, a request fails. */
const REQUEST_TIMEOUT_MS = 30_000;
const MAIL_TIMEOUT_MS = 30_000;

export interface LoginSample {
  /** The whole login as the user's browser sees it, mail delivery included. */
  totalMs: number;
  /** Time spent on the OTP page waiting for the mail (after the page had loaded). */
  mailWaitMs: number;
  /** From the user-ID response to the OTP mail received and parsed at the SMTP sink. */
  mailDeliveryMs: number;
  /** Milliseconds per step (HTTP round trip with body; the token step includes ID token validation). */
  steps: Record<string, number>;
  /** The refresh token of the code grant, if one was issued. */
  refreshToken?: string;
}

/** How a login proves the user: the mailed OTP, or a password. */
export type LoginProof = { kind: 'otp'; sink: OtpSink } | { kind: 'password'; password: string };

/**
 * Called after each step has been timed (so whatever it does is not part of any step): lets a caller
 * attribute side effects, such as SQL statements, to the step that caused them.
 */
export type AfterStep = (step: string) => Promise<void>;

/** A failed login, with the HTTP status when the provider answered with an unexpected one. */
export class LoginError extends Error {
  constructor(
    readonly step: string,
    message: string,
    readonly status?: number,
  ) {
    super(`${step}: ${message}`);
  }
}

interface Page {
  status: number;
  location: string | null;
  body: string;
}

/**
 * Keep-alive connections of the simulated browsers, as a browser keeps them. The browsers talk
 * node:http rather than fetch: fetch's Request, Response, web streams and abort signals cost the
 * bench process about as much CPU per login as bare oidc-provider's whole login, on the 2 cores
 * the providers share (the bench prints its own CPU per login).
 */
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

/** A cookie-keeping client that follows nothing by itself, like the tests' browser-less agent. */
class Browser {
  private readonly cookies = new Map<string, string>();
  readonly steps: Record<string, number> = {};
  constructor(
    private readonly base: string,
    private readonly afterStep?: AfterStep,
  ) {}

  async request(step: string, method: 'GET' | 'POST', path: string, form?: Record<string, string>): Promise<Page> {
    const t0 = performance.now();
    const body = form ? new URLSearchParams(form).toString() : undefined;
    const url = new URL(path, this.base);
    let res: { status: number; headers: http.IncomingHttpHeaders; body: string };
    try {
      res = await new Promise((resolve, reject) => {
        const req = http.request(
          url,
          {
            method,
            agent,
            headers: {
              cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '),
              accept: 'text/html',
              'accept-language': 'ja',
              ...(body !== undefined ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } : {}),
            },
          },
          (response) => {
            // Reading the body is part of the page load.
            const chunks: Buffer[] = [];
            response.on('data', (c: Buffer) => chunks.push(c));
            response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') }));
            response.on('error', reject);
          },
        );
        req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
        req.on('error', reject);
        req.end(body);
      });
    } catch (e) {
      throw new LoginError(step, `request failed: ${(e as Error).message}`);
    }
    for (const c of res.headers['set-cookie'] ?? []) {
      const [pair = ''] = c.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i);
      const value = pair.slice(i + 1);
      if (/expires=Thu, 01 Jan 1970/i.test(c) || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    const location = res.headers.location;
    const page = { status: res.status, location: location ?? null, body: res.body };
    this.steps[step] = (this.steps[step] ?? 0) + performance.now() - t0;
    await this.afterStep?.(step);
    return page;
  }
}

function expectStatus(step: string, page: Page, ...allowed: number[]): void {
  if (!allowed.includes(page.status)) {
    const snippet = page.body.replace(/\s+/g, ' ').slice(0, 200);
    throw new LoginError(step, `expected HTTP ${allowed.join('/')}, got ${page.status}${page.location ? ` → ${page.location}` : ''}: ${snippet}`, page.status);
  }
}

function csrfOf(step: string, page: Page): string {
  const m = /name="_csrf" value="([^"]+)"/.exec(page.body);
  if (!m) throw new LoginError(step, 'no CSRF field on the page');
  return m[1]!;
}

const REDIRECTS = [302, 303];

/**
 * One complete login: authorize (PKCE) → user-ID page → submit → the factor's page → (OTP: wait for
 * the mail) → submit the OTP or password → redirects to the callback → code exchange. The OTP login
 * runs the same steps against both providers.
 */
export async function runLogin(
  rp: oidc.Configuration,
  issuer: string,
  proof: LoginProof,
  user: { userId: string; email: string },
  afterStep?: AfterStep,
): Promise<LoginSample> {
  const t0 = performance.now();
  const browser = new Browser(issuer, afterStep);
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const url = oidc.buildAuthorizationUrl(rp, {
    redirect_uri: REDIRECT_URI,
    scope: 'openid profile email',
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });

  const authorize = await browser.request('authorize', 'GET', url.pathname + url.search);
  expectStatus('authorize', authorize, ...REDIRECTS);
  const uid = /\/interaction\/([^/?#]+)/.exec(authorize.location ?? '')?.[1];
  if (!uid) throw new LoginError('authorize', `expected a redirect to the interaction, got ${authorize.location}`);
  const interaction = `/interaction/${uid}`;

  const identifyPage = await browser.request('user-ID page', 'GET', interaction);
  expectStatus('user-ID page', identifyPage, 200);
  const identified = await browser.request('submit user ID', 'POST', `${interaction}/identify`, { _csrf: csrfOf('user-ID page', identifyPage), userId: user.userId });
  expectStatus('submit user ID', identified, ...REDIRECTS);
  const tIdentified = performance.now();

  let mailWaitMs = 0;
  let mailDeliveryMs = 0;
  let res: Page;
  if (proof.kind === 'otp') {
    const otpPage = await browser.request('OTP page', 'GET', identified.location ?? interaction);
    expectStatus('OTP page', otpPage, 200);
    const tWait = performance.now();
    let mail;
    try {
      mail = await proof.sink.waitForOtp(user.email, MAIL_TIMEOUT_MS);
    } catch (e) {
      throw new LoginError('wait for OTP mail', (e as Error).message);
    }
    mailWaitMs = performance.now() - tWait;
    mailDeliveryMs = Math.max(0, mail.receivedAt - tIdentified);
    await afterStep?.('wait for OTP mail');
    res = await browser.request('submit OTP', 'POST', `${interaction}/otp`, { _csrf: csrfOf('OTP page', otpPage), otp: mail.otp });
    expectStatus('submit OTP', res, ...REDIRECTS);
  } else {
    const passwordPage = await browser.request('password page', 'GET', identified.location ?? interaction);
    expectStatus('password page', passwordPage, 200);
    if (!passwordPage.body.includes('type="password"')) throw new LoginError('password page', 'no password field on the page');
    res = await browser.request('submit password', 'POST', `${interaction}/password`, { _csrf: csrfOf('password page', passwordPage), password: proof.password });
    expectStatus('submit password', res, ...REDIRECTS);
  }

  let callback: URL | undefined;
  for (let hop = 0; hop < 10 && !callback; hop++) {
    const next = new URL(res.location ?? '', issuer);
    if (next.href.startsWith(REDIRECT_URI)) {
      callback = next;
      break;
    }
    res = await browser.request('resume authorization', 'GET', next.pathname + next.search);
    expectStatus('resume authorization', res, ...REDIRECTS);
  }
  if (!callback) throw new LoginError('resume authorization', 'too many redirects');
  if (!callback.searchParams.has('code')) throw new LoginError('callback', `no code: ${callback.search}`);

  const tToken = performance.now();
  let tokens;
  try {
    tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
    if (!tokens.claims()?.sub) throw new Error('ID token without sub');
  } catch (e) {
    const status = e instanceof oidc.ResponseBodyError ? e.status : undefined;
    throw new LoginError('token', (e as Error).message, status);
  }
  browser.steps['code grant'] = performance.now() - tToken;
  await afterStep?.('code grant');
  return {
    totalMs: performance.now() - t0,
    mailWaitMs,
    mailDeliveryMs,
    steps: browser.steps,
    ...(tokens.refresh_token ? { refreshToken: tokens.refresh_token } : {}),
  };
}

/** One refresh-token grant; returns the refresh token to use next (a rotated one, or the same). */
export async function refreshGrant(rp: oidc.Configuration, refreshToken: string): Promise<string> {
  try {
    const tokens = await oidc.refreshTokenGrant(rp, refreshToken);
    if (!tokens.access_token) throw new Error('no access token');
    return tokens.refresh_token ?? refreshToken;
  } catch (e) {
    const status = e instanceof oidc.ResponseBodyError ? e.status : undefined;
    throw new LoginError('refresh_token grant', (e as Error).message, status);
  }
}

/** One client_credentials grant (the back office's token for the management API). */
export async function clientCredentialsGrant(rp: oidc.Configuration, scope: string): Promise<void> {
  try {
    const tokens = await oidc.clientCredentialsGrant(rp, { scope });
    if (!tokens.access_token) throw new Error('no access token');
  } catch (e) {
    const status = e instanceof oidc.ResponseBodyError ? e.status : undefined;
    throw new LoginError('client_credentials grant', (e as Error).message, status);
  }
}

/** The relying site's view of a provider (discovery once, reused by every login). */
export function discoverRp(issuer: string, clientId: string, clientSecret: string): Promise<oidc.Configuration> {
  return oidc.discovery(new URL(issuer), clientId, undefined, oidc.ClientSecretBasic(clientSecret), { execute: [oidc.allowInsecureRequests] });
}

/**
 * The user-ID step alone (authorize → user-ID page → submit), timed from the submit to its response
 * read in full: what someone probing whether user IDs exist would measure.
 */
export async function timeUserIdStep(rp: oidc.Configuration, issuer: string, userId: string): Promise<number> {
  const browser = new Browser(issuer);
  const url = oidc.buildAuthorizationUrl(rp, {
    redirect_uri: REDIRECT_URI,
    scope: 'openid',
    code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()),
    code_challenge_method: 'S256',
    state: oidc.randomState(),
  });
  const authorize = await browser.request('authorize', 'GET', url.pathname + url.search);
  expectStatus('authorize', authorize, ...REDIRECTS);
  const uid = /\/interaction\/([^/?#]+)/.exec(authorize.location ?? '')?.[1];
  if (!uid) throw new LoginError('authorize', `expected a redirect to the interaction, got ${authorize.location}`);
  const interaction = `/interaction/${uid}`;
  const page = await browser.request('user-ID page', 'GET', interaction);
  expectStatus('user-ID page', page, 200);
  const res = await browser.request('submit user ID', 'POST', `${interaction}/identify`, { _csrf: csrfOf('user-ID page', page), userId });
  // 400 and 403: the explicit pages of REVEAL_UNKNOWN_USER (or of a version that has them).
  expectStatus('submit user ID', res, ...REDIRECTS, 400, 403);
  return browser.steps['submit user ID']!;
}
