import { performance } from 'node:perf_hooks';
import * as oidc from 'openid-client';
import type { OtpSink } from './otp-sink.js';

export const REDIRECT_URI = 'http://127.0.0.1/cb';
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
}

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

/** A cookie-keeping client that follows nothing by itself, like the tests' browser-less agent. */
class Browser {
  private readonly cookies = new Map<string, string>();
  readonly steps: Record<string, number> = {};
  constructor(private readonly base: string) {}

  async request(step: string, method: 'GET' | 'POST', path: string, form?: Record<string, string>): Promise<Page> {
    const t0 = performance.now();
    let res: Response;
    try {
      res = await fetch(new URL(path, this.base), {
        method,
        redirect: 'manual',
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        headers: {
          cookie: [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '),
          accept: 'text/html',
          'accept-language': 'ja',
          ...(form ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        },
        body: form ? new URLSearchParams(form).toString() : undefined,
      });
    } catch (e) {
      throw new LoginError(step, `request failed: ${(e as Error).message}`);
    }
    for (const c of res.headers.getSetCookie()) {
      const [pair = ''] = c.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i);
      const value = pair.slice(i + 1);
      if (/expires=Thu, 01 Jan 1970/i.test(c) || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    // Reading the body is part of the page load.
    const page = { status: res.status, location: res.headers.get('location'), body: await res.text() };
    this.steps[step] = (this.steps[step] ?? 0) + performance.now() - t0;
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
 * One complete login: authorize (PKCE) → user-ID page → OTP page → wait for the mail → submit the
 * OTP → redirects to the callback → code exchange. The same steps against both providers.
 */
export async function runLogin(rp: oidc.Configuration, issuer: string, sink: OtpSink, user: { userId: string; email: string }): Promise<LoginSample> {
  const t0 = performance.now();
  const browser = new Browser(issuer);
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

  const otpPage = await browser.request('OTP page', 'GET', identified.location ?? interaction);
  expectStatus('OTP page', otpPage, 200);
  const tWait = performance.now();
  let mail;
  try {
    mail = await sink.waitForOtp(user.email, MAIL_TIMEOUT_MS);
  } catch (e) {
    throw new LoginError('wait for OTP mail', (e as Error).message);
  }
  const mailWaitMs = performance.now() - tWait;

  let res = await browser.request('submit OTP', 'POST', `${interaction}/otp`, { _csrf: csrfOf('OTP page', otpPage), otp: mail.otp });
  expectStatus('submit OTP', res, ...REDIRECTS);
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
  try {
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
    if (!tokens.claims()?.sub) throw new Error('ID token without sub');
  } catch (e) {
    const status = e instanceof oidc.ResponseBodyError ? e.status : undefined;
    throw new LoginError('token', (e as Error).message, status);
  }
  browser.steps['code grant'] = performance.now() - tToken;
  return { totalMs: performance.now() - t0, mailWaitMs, mailDeliveryMs: Math.max(0, mail.receivedAt - tIdentified), steps: browser.steps };
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
