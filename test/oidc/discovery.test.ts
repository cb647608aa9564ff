// Discovery advertises exactly what registered clients can use, and each advertised value works.
import * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { ACR_VALUES } from '../../src/login/login-methods.js';
import { DeviceRepository } from '../../src/persistence/device.repository.js';
import { signingAlgs } from '../../src/oidc/keys.js';
import { REDIRECT_URI, TEST_TENANTS_YAML, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent, discover, followToCallback, startLogin, submit } from '../support/browser-less.js';

type Metadata = Record<string, unknown>;

async function metadataOf(issuer: string): Promise<Metadata> {
  const res = await fetch(new URL('/.well-known/openid-configuration', issuer));
  expect(res.status).toBe(200);
  return (await res.json()) as Metadata;
}

const sorted = (v: unknown) => [...(v as string[])].sort();

const CLIENTS = {
  basic: { id: 'rp-basic', secret: 'rp-basic-secret-0123456789', auth: undefined },
  post: { id: 'rp-post', secret: 'rp-post-secret-0123456789', auth: 'post' as const },
  public: { id: 'rp-public', secret: undefined, auth: undefined },
};

describe('discovery on the test tenants', () => {
  let s: TestServer;
  let meta: Metadata;
  let user: { userId: string; email: string };
  /** A browser with a signed-in session of `user` (tenant t1), so further requests return at once. */
  let browser: Agent;

  beforeAll(async () => {
    s = await startTestServer();
    meta = await metadataOf(s.issuer);
    user = uniqueUser('disc');
    await s.app.services.accounts.create({ tenantId: 't1', userId: user.userId, devices: [{ email: user.email }] });
  });
  afterAll(() => s?.close());

  test('every field says exactly what works', () => {
    const i = s.issuer;
    expect(meta).toEqual({
      issuer: i,
      authorization_endpoint: `${i}/auth`,
      token_endpoint: `${i}/token`,
      userinfo_endpoint: `${i}/me`,
      jwks_uri: `${i}/jwks`,
      end_session_endpoint: `${i}/session/end`,
      introspection_endpoint: `${i}/token/introspection`,
      revocation_endpoint: `${i}/token/revocation`,
      response_types_supported: ['code'],
      response_modes_supported: expect.any(Array),
      grant_types_supported: expect.any(Array),
      scopes_supported: expect.any(Array),
      token_endpoint_auth_methods_supported: expect.any(Array),
      claims_supported: expect.any(Array),
      code_challenge_methods_supported: ['S256'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'],
      acr_values_supported: ACR_VALUES,
      claims_parameter_supported: true,
      request_uri_parameter_supported: false,
      authorization_response_iss_parameter_supported: true,
      backchannel_logout_supported: true,
      backchannel_logout_session_supported: true,
      claim_types_supported: ['normal'],
      ui_locales_supported: ['ja', 'en'],
      // On in oidc-provider 9 and usable by every client (tested below).
      pushed_authorization_request_endpoint: `${i}/request`,
      dpop_signing_alg_values_supported: ['ES256', 'Ed25519', 'EdDSA'],
    });
    expect(sorted(meta.response_modes_supported)).toEqual(['form_post', 'fragment', 'query']);
    expect(sorted(meta.grant_types_supported)).toEqual(['authorization_code', 'client_credentials', 'refresh_token']);
    expect(sorted(meta.scopes_supported)).toEqual(['email', 'offline_access', 'openid', 'profile']);
    expect(sorted(meta.token_endpoint_auth_methods_supported)).toEqual(['client_secret_basic', 'client_secret_post', 'none']);
    expect(sorted(meta.claims_supported)).toEqual(
      ['acr', 'amr', 'aud', 'auth_time', 'email', 'email_verified', 'exp', 'iat', 'iss', 'locale', 'nonce', 'preferred_username', 'sid', 'sub', 'updated_at'].sort(),
    );
  });

  /** An authorization request in the signed-in browser; returns what reached the site (code or error). */
  async function authorize(clientId: string, params: Record<string, string>): Promise<URLSearchParams> {
    const query = new URLSearchParams({ client_id: clientId, redirect_uri: REDIRECT_URI, scope: 'openid', state: 'st', nonce: 'nc', ...params });
    const res = await browser.get(`/auth?${query}`);
    if (res.status === 200) {
      // form_post: an auto-submitting form addressed to the site.
      const html = await res.text();
      expect(html).toContain(`action="${REDIRECT_URI}"`);
      return new URLSearchParams([...html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    }
    const back = await followToCallback(browser, res);
    return new URLSearchParams(back.hash ? back.hash.slice(1) : back.search);
  }

  test('the advertised profile claims are in the ID token and at userinfo; every auth method exchanges a code', async () => {
    const basic = await discover(s.issuer, CLIENTS.basic.id, CLIENTS.basic.secret);
    // The first login sets up the session the other tests use; its pages were in English.
    const login = await startLogin(basic, s.issuer, { scope: 'openid profile email offline_access', ui_locales: 'en' });
    browser = login.agent;
    const before = s.smtp.messages.length;
    expect((await submit(login, 'identify', { userId: user.userId })).status).toBe(303);
    const otp = await s.smtp.otpFor(user.email, before);
    const callback = await followToCallback(login.agent, await submit(login, 'otp', { otp }));
    const tokens = await oidc.authorizationCodeGrant(basic, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    // offline_access is accepted (OIDC Core grants it only with prompt=consent); a refresh token comes anyway.
    expect(tokens.scope?.split(' ').sort()).toEqual(['email', 'openid', 'profile']);
    expect(tokens.refresh_token).toBeTruthy();

    const account = await s.db.prisma.account.findFirstOrThrow({ where: { tenantId: 't1', userId: user.userId } });
    const profile = { preferred_username: user.userId, locale: 'en', updated_at: Math.floor(account.updatedAt.getTime() / 1000), email: user.email, email_verified: true };
    expect(tokens.claims()).toMatchObject({ sub: account.id, ...profile });
    const advertised = new Set(meta.claims_supported as string[]);
    for (const claim of Object.keys(tokens.claims()!)) if (claim !== 'at_hash' && claim !== 'c_hash') expect(advertised).toContain(claim);
    const info = await oidc.fetchUserInfo(basic, tokens.access_token, account.id);
    expect(info).toEqual({ sub: account.id, ...profile });

    // refresh_token
    const refreshed = await oidc.refreshTokenGrant(basic, tokens.refresh_token!);
    expect(refreshed.access_token).toBeTruthy();

    // client_secret_post and none (a public client, with PKCE)
    for (const c of [CLIENTS.post, CLIENTS.public]) {
      const config = await discover(s.issuer, c.id, c.secret, c.auth);
      const verifier = oidc.randomPKCECodeVerifier();
      const got = await authorize(c.id, { response_type: 'code', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
      const url = new URL(`${REDIRECT_URI}?${got}`);
      const t = await oidc.authorizationCodeGrant(config, url, { pkceCodeVerifier: verifier, expectedState: 'st', expectedNonce: 'nc' });
      expect(t.claims()?.sub).toBe(account.id);
    }
  });

  test.each(['query', 'fragment', 'form_post'])('response_type=code with response_mode=%s delivers a code', async (mode) => {
    expect(browser).toBeDefined();
    const got = await authorize('rp-basic', { response_type: 'code', response_mode: mode });
    expect(got.get('error')).toBeNull();
    expect(got.get('code')).toBeTruthy();
    expect(got.get('state')).toBe('st');
  });

  test.each(['id_token', 'code id_token', 'id_token token', 'none'])('response_type=%s is refused with unsupported_response_type', async (type) => {
    const query = new URLSearchParams({ client_id: 'rp-basic', redirect_uri: REDIRECT_URI, scope: 'openid', state: 'st', nonce: 'nc', response_type: type });
    const res = await new Agent(s.issuer).get(`/auth?${query}`);
    const location = new URL(res.headers.get('location') ?? '', s.issuer);
    const params = new URLSearchParams(location.hash ? location.hash.slice(1) : location.search);
    expect(params.get('error')).toBe('unsupported_response_type');
  });

  test('a pushed authorization request (PAR) gets a code, and a DPoP-bound token works at userinfo', async () => {
    const basic = await discover(s.issuer, CLIENTS.basic.id, CLIENTS.basic.secret);
    const verifier = oidc.randomPKCECodeVerifier();
    const pushed = await oidc.buildAuthorizationUrlWithPAR(basic, {
      redirect_uri: REDIRECT_URI,
      scope: 'openid profile',
      state: 'st',
      nonce: 'nc',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const back = await followToCallback(browser, await browser.get(pushed.pathname + pushed.search));
    const DPoP = oidc.getDPoPHandle(basic, await oidc.randomDPoPKeyPair('ES256'));
    const tokens = await oidc.authorizationCodeGrant(basic, back, { pkceCodeVerifier: verifier, expectedState: 'st', expectedNonce: 'nc' }, undefined, { DPoP });
    expect(tokens.token_type.toLowerCase()).toBe('dpop');
    const sub = tokens.claims()!.sub;
    expect((await oidc.fetchUserInfo(basic, tokens.access_token, sub, { DPoP })).sub).toBe(sub);
    await expect(oidc.fetchUserInfo(basic, tokens.access_token, sub)).rejects.toBeDefined();
  });

  test('removing the device that gave the e-mail claim moves the account\'s updated_at', async () => {
    const u = uniqueUser('disc-dev');
    const created = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }, { email: `2.${u.email}` }] });
    const before = await s.db.prisma.account.findUniqueOrThrow({ where: { id: created.id } });
    const first = (await s.db.prisma.device.findFirstOrThrow({ where: { accountId: created.id, number: 1 } })).id;
    expect(await new DeviceRepository(s.db.prisma).remove({ accountId: created.id, deviceId: first, purpose: 'device_remove' })).toMatchObject({ ok: true });
    const after = await s.db.prisma.account.findUniqueOrThrow({ where: { id: created.id } });
    expect(after.updatedAt.getTime()).toBeGreaterThan(before.updatedAt.getTime());
  });

  test('client_credentials still grants the unadvertised management scope to a back office', async () => {
    const backoffice = await discover(s.issuer, 'backoffice-t1', 'backoffice-t1-secret-0123456789');
    const tokens = await oidc.clientCredentialsGrant(backoffice, { scope: 'management' });
    expect(tokens.scope).toBe('management');
    const res = await fetch(new URL('/api/v1/accounts', s.issuer), { headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(res.status).toBe(200);
  });
});

describe('ID token algorithms follow the signing keys', () => {
  test.each([
    ['an RS256 key', [{ kty: 'RSA', alg: 'RS256' }], ['RS256']],
    ['an RSA key without alg', [{ kty: 'RSA' }], ['RS256', 'PS256']],
    ['EC P-256 and RSA keys, an encryption key ignored', [{ kty: 'EC', crv: 'P-256' }, { kty: 'RSA', alg: 'RS256', use: 'sig' }, { kty: 'RSA', use: 'enc' }], ['RS256', 'ES256']],
    ['an Ed25519 key', [{ kty: 'OKP', crv: 'Ed25519' }], ['Ed25519', 'EdDSA']],
  ])('%s', (_name, keys, algs) => {
    expect(signingAlgs({ keys })).toEqual(algs);
  });

  test('keys that cannot sign an ID token are refused at start', () => {
    expect(() => signingAlgs({ keys: [{ kty: 'EC', crv: 'P-384' }, { kty: 'RSA', use: 'enc' }] })).toThrow(/no key can sign ID tokens/);
  });
});

describe('discovery follows the registered clients', () => {
  test('confidential clients registered with client_secret_basic only: no client_credentials, no none, the secret taken in header or body, no certificate binding without a certificate source', async () => {
    const yaml = `
tenants:
  - id: solo
    name: 単独
    contract: { account_area: false, support_console: false }
    clients:
      - { client_id: only-site, client_secret: only-site-secret-0123456789, name: サイト, redirect_uris: ['${REDIRECT_URI}'], tls_client_certificate_bound_access_tokens: true }
`;
    const s = await startTestServer({ database: 'pglite', tenants: parseTenants('solo', yaml) });
    try {
      const meta = await metadataOf(s.issuer);
      expect(sorted(meta.grant_types_supported)).toEqual(['authorization_code', 'refresh_token']);
      // Either way of presenting a secret works for such a client (client libraries pick one), so both are listed.
      expect(meta.token_endpoint_auth_methods_supported).toEqual(['client_secret_basic', 'client_secret_post']);
      const asPost = await fetch(new URL('/token', s.issuer), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'authorization_code', code: 'not-a-code', redirect_uri: REDIRECT_URI, client_id: 'only-site', client_secret: 'only-site-secret-0123456789' }),
      });
      // Authenticated (the code is what is wrong), not invalid_client.
      expect(await asPost.json()).toMatchObject({ error: 'invalid_grant' });
      expect(meta.tls_client_certificate_bound_access_tokens).toBeUndefined();
      const site = await discover(s.issuer, 'only-site', 'only-site-secret-0123456789');
      await expect(oidc.clientCredentialsGrant(site, {})).rejects.toMatchObject({ error: 'unsupported_grant_type' });
    } finally {
      await s.close();
    }
  });

  test('certificate-bound access tokens are advertised when a client uses them and certificates can arrive', async () => {
    const yaml = `
tenants:
  - id: solo
    name: 単独
    clients:
      - { client_id: bound-site, client_secret: bound-site-secret-0123456789, name: サイト, redirect_uris: ['${REDIRECT_URI}'], tls_client_certificate_bound_access_tokens: true }
`;
    const s = await startTestServer({ database: 'pglite', tenants: parseTenants('solo', yaml), env: { CLIENT_CERT_HEADER: 'x-client-cert', TRUSTED_PROXIES: '127.0.0.1' } });
    try {
      expect((await metadataOf(s.issuer)).tls_client_certificate_bound_access_tokens).toBe(true);
    } finally {
      await s.close();
    }
  });
});
