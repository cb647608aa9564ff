// PKCE per client: public clients always; confidential clients when registered with require_pkce, and
// whenever they send a code_challenge; otherwise a confidential client may sign in without it (OIDC Core).
import * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { REDIRECT_URI, TEST_TENANTS_YAML, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent, discover, followToCallback, submit, type StartedLogin } from '../support/browser-less.js';

const STRICT = `      - { client_id: rp-strict, client_secret: rp-strict-secret-0123456789, require_pkce: true, name: 厳格サイト, redirect_uris: ['${REDIRECT_URI}'] }\n`;

describe('PKCE policy per client', () => {
  let s: TestServer;
  let user: { userId: string; email: string };
  beforeAll(async () => {
    s = await startTestServer({ tenants: parseTenants('t', TEST_TENANTS_YAML.replace('  - id: t2\n', `${STRICT}  - id: t2\n`)) });
    user = uniqueUser('pkce');
    await s.app.services.accounts.create({ tenantId: 't1', userId: user.userId, devices: [{ email: user.email }] });
  });
  afterAll(() => s?.close());

  /** An authorization request with or without a code_challenge; the redirect it gets. */
  async function authorize(config: oidc.Configuration, withPkce: boolean): Promise<{ res: Response; login: Omit<StartedLogin, 'uid' | 'interactionPath'>; verifier?: string }> {
    const agent = new Agent(s.issuer);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: REDIRECT_URI,
      scope: 'openid profile',
      state,
      nonce,
      ...(withPkce ? { code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' } : {}),
    });
    return { res: await agent.get(url.pathname + url.search), login: { agent, verifier, state, nonce }, verifier: withPkce ? verifier : undefined };
  }

  async function signIn(config: oidc.Configuration, withPkce: boolean) {
    const { res, login } = await authorize(config, withPkce);
    const m = /\/interaction\/([^/?]+)/.exec(res.headers.get('location') ?? '');
    if (!m) throw new Error(`expected the login page, got ${res.status} ${res.headers.get('location')}`);
    const started: StartedLogin = { ...login, uid: m[1]!, interactionPath: `/interaction/${m[1]}` };
    const before = s.smtp.messages.length;
    expect((await submit(started, 'identify', { userId: user.userId })).status).toBe(303);
    const otp = await s.smtp.otpFor(user.email, before);
    const callback = await followToCallback(started.agent, await submit(started, 'otp', { otp }));
    return { started, callback };
  }

  test('a confidential client signs in without PKCE, as OpenID Connect Core allows', async () => {
    const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const { started, callback } = await signIn(rp, false);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { expectedState: started.state, expectedNonce: started.nonce });
    expect(tokens.claims()?.preferred_username).toBe(user.userId);
  });

  test('a code_challenge a confidential client sent is enforced: the code without its verifier is refused', async () => {
    const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const { started, callback } = await signIn(rp, true);
    await expect(oidc.authorizationCodeGrant(rp, callback, { expectedState: started.state, expectedNonce: started.nonce })).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  test.each([
    ['a public client', 'rp-public', undefined],
    ['a confidential client registered with require_pkce', 'rp-strict', 'rp-strict-secret-0123456789'],
  ])('%s without a code_challenge is sent back with invalid_request', async (_name, clientId, secret) => {
    const rp = await discover(s.issuer, clientId, secret);
    const { res } = await authorize(rp, false);
    const back = new URL(res.headers.get('location') ?? '', s.issuer);
    expect(back.origin + back.pathname).toBe(REDIRECT_URI);
    expect(back.searchParams.get('error')).toBe('invalid_request');
    expect(back.searchParams.get('error_description')).toMatch(/PKCE/);
  });
});
