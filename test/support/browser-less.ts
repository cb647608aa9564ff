import * as oidc from 'openid-client';
import { REDIRECT_URI } from './harness.js';

/** A minimal cookie-keeping HTTP client that follows nothing by itself, like a careful browser. */
export class Agent {
  readonly cookies = new Map<string, string>();
  /** `fetchImpl`: another transport, e.g. one presenting a TLS client certificate (mtls-fetch.ts). */
  constructor(
    readonly base: string,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {}

  private cookieHeader() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async request(method: string, path: string, body?: Record<string, string>, headers: Record<string, string> = {}): Promise<Response> {
    const url = new URL(path, this.base);
    const res = await this.fetchImpl(url, {
      method,
      redirect: 'manual',
      headers: {
        cookie: this.cookieHeader(),
        'accept-language': 'ja',
        accept: 'text/html',
        ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
        ...headers,
      },
      body: body ? new URLSearchParams(body).toString() : undefined,
    });
    for (const c of res.headers.getSetCookie()) {
      const [pair = ''] = c.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i);
      const value = pair.slice(i + 1);
      if (/expires=Thu, 01 Jan 1970/i.test(c) || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return res;
  }

  get(path: string, headers?: Record<string, string>) {
    return this.request('GET', path, undefined, headers);
  }
  post(path: string, body: Record<string, string>, headers?: Record<string, string>) {
    return this.request('POST', path, body, headers);
  }
}

export function csrfOf(html: string): string {
  const m = /name="_csrf" value="([^"]+)"/.exec(html);
  if (!m) throw new Error('no CSRF token on the page');
  return m[1]!;
}

export async function discover(issuer: string, clientId: string, secret?: string, auth?: 'post') {
  const clientAuth = secret ? (auth === 'post' ? oidc.ClientSecretPost(secret) : oidc.ClientSecretBasic(secret)) : oidc.None();
  return oidc.discovery(new URL(issuer), clientId, undefined, clientAuth, { execute: [oidc.allowInsecureRequests] });
}

export interface StartedLogin {
  agent: Agent;
  uid: string;
  verifier: string;
  state: string;
  nonce: string;
  /** The interaction page path. */
  interactionPath: string;
}

/** Opens the authorization endpoint and lands on the login interaction. */
export async function startLogin(config: oidc.Configuration, issuer: string, extra: Record<string, string> = {}, agent = new Agent(issuer)): Promise<StartedLogin> {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT_URI,
    scope: 'openid profile email',
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    ...extra,
  });
  const res = await agent.get(url.pathname + url.search);
  const location = res.headers.get('location') ?? '';
  const m = /\/interaction\/([^/?]+)/.exec(location);
  if (!m) throw new Error(`expected a redirect to the interaction, got ${res.status} ${location}`);
  return { agent, uid: m[1]!, verifier, state, nonce, interactionPath: `/interaction/${m[1]}` };
}

/** Submits a form of the current interaction page (fetching it first for the CSRF token). */
export async function submit(login: StartedLogin, action: string, fields: Record<string, string>): Promise<Response> {
  const page = await login.agent.get(login.interactionPath);
  const html = await page.text();
  return login.agent.post(`${login.interactionPath}/${action}`, { _csrf: csrfOf(html), ...fields });
}

/** Follows redirects until the relying site's redirect URI; returns that URL (with code or error). */
export async function followToCallback(agent: Agent, res: Response): Promise<URL> {
  let current = res;
  for (let i = 0; i < 10; i++) {
    const location = current.headers.get('location');
    if (!location) throw new Error(`expected a redirect, got ${current.status}: ${(await current.text()).slice(0, 300)}`);
    const next = new URL(location, agent.base);
    if (next.href.startsWith(REDIRECT_URI)) return next;
    current = await agent.get(next.pathname + next.search);
  }
  throw new Error('too many redirects');
}

/**
 * RP-initiated logout as a browser completes it: from a client's redirect to /session/end, the
 * provider's confirmation page is confirmed. Returns where the provider sends the browser then.
 */
export async function confirmEndSession(agent: Agent, logoutRedirect: Response): Promise<string | null> {
  const end = new URL(logoutRedirect.headers.get('location')!, agent.base);
  expect(end.pathname).toBe('/session/end');
  const confirm = await (await agent.get(end.pathname + end.search)).text();
  const xsrf = /name="xsrf" value="([^"]+)"/.exec(confirm)![1]!;
  const done = await agent.post('/session/end/confirm', { xsrf, logout: 'yes' });
  return done.headers.get('location');
}
