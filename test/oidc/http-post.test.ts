// OpenID Connect Core 3.1.2.1 and RP-Initiated Logout 1.0: the authorization and end-session endpoints
// accept POST. A relying site's form posts cross-site, so the browser sends only SameSite=None cookies
// with it: that needs Secure cookies, hence an https issuer (here a real TLS listener).
import * as oidc from 'openid-client';
import { POST_LOGOUT_URI, REDIRECT_URI, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent, followToCallback, submit, type StartedLogin } from '../support/browser-less.js';
import { mtlsFetch } from '../support/mtls-fetch.js';

const SECRET = 'rp-basic-secret-0123456789';

describe('POST /auth and POST /session/end on an https issuer', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  let user: { userId: string; email: string };
  /** SameSite attribute of every cookie the provider set, by name. */
  const sameSite = new Map<string, string>();
  const secure = new Map<string, boolean>();

  beforeAll(async () => {
    s = await startTestServer({ tls: true });
    user = uniqueUser('post');
    await s.app.services.accounts.create({ tenantId: 't1', userId: user.userId, devices: [{ email: user.email }] });
    rp = await oidc.discovery(new URL(s.issuer), 'rp-basic', undefined, oidc.ClientSecretBasic(SECRET), {
      // Its bodies are strings or URLSearchParams, which the test fetch sends as they are.
      [oidc.customFetch]: tlsFetch() as oidc.CustomFetch,
    });
  });
  afterAll(() => s?.close());

  /** A fetch that trusts the test server's certificate and notes the attributes of the cookies it sets. */
  function tlsFetch(): typeof fetch {
    const inner = mtlsFetch({ ca: s.tlsCertificate });
    return (async (input: string | URL | Request, init?: RequestInit) => {
      const res = await inner(input, init);
      for (const c of res.headers.getSetCookie()) {
        const name = c.slice(0, c.indexOf('='));
        sameSite.set(name, /;\s*samesite=(\w+)/i.exec(c)?.[1]?.toLowerCase() ?? 'unset');
        secure.set(name, /;\s*secure(;|$)/i.test(c));
      }
      return res;
    }) as typeof fetch;
  }

  /** The cookies a browser sends with a cross-site form post: only the SameSite=None ones. */
  const crossSiteCookies = (agent: Agent) =>
    [...agent.cookies]
      .filter(([name]) => sameSite.get(name) === 'none')
      .map(([k, v]) => `${k}=${v}`)
      .join('; ');

  /** A relying site's auto-submitted form to /auth (PKCE, as a careful site does). */
  async function postAuthorization(agent: Agent) {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const res = await agent.request(
      'POST',
      '/auth',
      {
        client_id: 'rp-basic',
        response_type: 'code',
        redirect_uri: REDIRECT_URI,
        scope: 'openid profile email',
        state,
        nonce,
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
      },
      { cookie: crossSiteCookies(agent), origin: 'https://relying-site.example', 'sec-fetch-site': 'cross-site' },
    );
    return { res, verifier, state, nonce };
  }

  async function signIn(agent: Agent) {
    const { res, verifier, state, nonce } = await postAuthorization(agent);
    expect(res.status).toBe(303);
    const m = /^\/interaction\/([^/?]+)$/.exec(new URL(res.headers.get('location') ?? '', s.issuer).pathname);
    if (!m) throw new Error(`expected the login page, got ${res.status} ${res.headers.get('location')}`);
    const login: StartedLogin = { agent, uid: m[1]!, verifier, state, nonce, interactionPath: `/interaction/${m[1]}` };
    const page = await agent.get(login.interactionPath);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('name="userId"');
    const before = s.smtp.messages.length;
    expect((await submit(login, 'identify', { userId: user.userId })).status).toBe(303);
    const otp = await s.smtp.otpFor(user.email, before);
    const callback = await followToCallback(agent, await submit(login, 'otp', { otp }));
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
    return tokens;
  }

  test('a form POST to /auth from a relying site leads to the login page and a login with the mailed code', async () => {
    const agent = new Agent(s.issuer, tlsFetch());
    const tokens = await signIn(agent);
    expect(tokens.claims()?.preferred_username).toBe(user.userId);

    // The provider session cookie travels with the next cross-site POST: the user is signed in at once.
    expect(sameSite.get('_session')).toBe('none');
    expect(secure.get('_session')).toBe(true);
    const again = await postAuthorization(agent);
    const callback = await followToCallback(agent, again.res);
    expect(callback.searchParams.get('code')).toBeTruthy();
    expect(callback.searchParams.get('state')).toBe(again.state);
  });

  test('a POST to /session/end with id_token_hint shows the confirmation, then ends the session', async () => {
    const agent = new Agent(s.issuer, tlsFetch());
    const tokens = await signIn(agent);

    const confirm = await agent.request(
      'POST',
      '/session/end',
      { id_token_hint: tokens.id_token!, post_logout_redirect_uri: POST_LOGOUT_URI, state: 'bye-state' },
      { cookie: crossSiteCookies(agent), origin: 'https://relying-site.example', 'sec-fetch-site': 'cross-site' },
    );
    expect(confirm.status).toBe(200);
    const html = await confirm.text();
    expect(html).toContain('ログアウトしますか');
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)?.[1];
    expect(xsrf).toBeTruthy();
    const done = await agent.post('/session/end/confirm', { xsrf: xsrf!, logout: 'yes' });
    expect(done.status).toBe(303);
    const back = new URL(done.headers.get('location') ?? '');
    expect(back.origin + back.pathname).toBe(POST_LOGOUT_URI);
    expect(back.searchParams.get('state')).toBe('bye-state');

    // Signed out: the next authorization request asks for a login again.
    const after = await postAuthorization(agent);
    expect(after.res.status).toBe(303);
    expect(new URL(after.res.headers.get('location') ?? '', s.issuer).pathname).toMatch(/^\/interaction\//);
  });
});

describe('POST /auth on an http (development) issuer', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer();
  });
  afterAll(() => s?.close());

  test('is answered 405 with Allow: GET (a page saying the method is not available), never a server error', async () => {
    for (const [path, fields] of [
      ['/auth', { client_id: 'rp-basic', response_type: 'code', redirect_uri: REDIRECT_URI, scope: 'openid' }],
      ['/session/end', { client_id: 'rp-basic' }],
    ] as const) {
      const res = await new Agent(s.issuer).post(path, fields);
      expect(res.status).toBe(405);
      expect(res.headers.get('allow')).toBe('GET');
      expect(await res.text()).toContain('このページではその操作はできません');
    }
    // GET keeps working there.
    expect((await new Agent(s.issuer).get(`/auth?client_id=rp-basic&response_type=code&scope=openid&redirect_uri=${encodeURIComponent(REDIRECT_URI)}`)).status).toBe(303);
  });
});

describe('POST /auth behind a TLS-terminating proxy (TRUST_PROXY)', () => {
  let s: TestServer;
  let user: { userId: string; email: string };
  beforeAll(async () => {
    s = await startTestServer({ env: { ISSUER: 'https://idp.example.test', TRUST_PROXY: 'true' } });
    user = uniqueUser('proxy');
    await s.app.services.accounts.create({ tenantId: 't1', userId: user.userId, devices: [{ email: user.email }] });
  });
  afterAll(() => s?.close());

  test('a form POST signs in, and the session cookie is SameSite=None and Secure', async () => {
    const setCookies: string[] = [];
    const viaProxy = (async (input: string | URL | Request, init?: RequestInit) => {
      const res = await fetch(input, { ...init, headers: { ...(init?.headers as Record<string, string>), 'x-forwarded-proto': 'https' } });
      setCookies.push(...res.headers.getSetCookie());
      return res;
    }) as typeof fetch;
    const agent = new Agent(s.issuer, viaProxy);
    const verifier = oidc.randomPKCECodeVerifier();
    const res = await agent.post('/auth', {
      client_id: 'rp-basic',
      response_type: 'code',
      redirect_uri: REDIRECT_URI,
      scope: 'openid',
      state: 'proxy-state',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    expect(res.status).toBe(303);
    const m = /^\/interaction\/([^/?]+)$/.exec(new URL(res.headers.get('location') ?? '', s.issuer).pathname);
    expect(m).toBeTruthy();
    const login: StartedLogin = { agent, uid: m![1]!, verifier, state: 'proxy-state', nonce: '', interactionPath: `/interaction/${m![1]}` };
    const before = s.smtp.messages.length;
    expect((await submit(login, 'identify', { userId: user.userId })).status).toBe(303);
    const callback = await followToCallback(agent, await submit(login, 'otp', { otp: await s.smtp.otpFor(user.email, before) }));
    expect(callback.searchParams.get('code')).toBeTruthy();
    const session = setCookies.find((c) => c.startsWith('_session='));
    expect(session).toMatch(/;\s*samesite=none/i);
    expect(session).toMatch(/;\s*secure/i);
  });
});
