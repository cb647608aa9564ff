// An authorization code is redeemed once (RFC 6749 4.1.2), also when the client (or an attacker who
// copied the code) sends several token requests at the same moment.
import * as oidc from 'openid-client';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent } from '../support/browser-less.js';
import { authorize, authorizeAndSignIn, callbackOf, createUser, exchange, suiteClients, type ConformanceUser } from '../support/conformance.js';

const PARALLEL = 8;

describe('authorization code redeemed in parallel', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  let user: ConformanceUser;
  let signedIn: Agent;

  beforeAll(async () => {
    s = await startTestServer();
    ({ basic: rp } = await suiteClients(s));
    const u = uniqueUser('race');
    user = await createUser(s, u.userId, u.email);
    signedIn = new Agent(s.issuer);
    const { request, callback } = await authorizeAndSignIn(s, rp, user, signedIn);
    await exchange(rp, request, callback);
  });
  afterAll(() => s?.close());

  test(`of ${PARALLEL} token requests with one code, exactly one gets tokens, the others invalid_grant, and the tokens are revoked`, async () => {
    for (let round = 0; round < 3; round++) {
      const request = await authorize(rp, signedIn, { scope: 'openid offline_access' });
      const callback = callbackOf(request.res, s.issuer)!;
      const results = await Promise.allSettled(
        Array.from({ length: PARALLEL }, () => oidc.authorizationCodeGrant(rp, callback, { expectedState: request.state, expectedNonce: request.nonce })),
      );
      const granted = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      expect(granted).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ error: 'invalid_grant' });
      // A code used more than once: the tokens it gave are revoked too (RFC 6749 4.1.2), as for a later reuse.
      await expect(oidc.fetchUserInfo(rp, granted[0]!.access_token, oidc.skipSubjectCheck)).rejects.toMatchObject({ status: 401 });
      await expect(oidc.refreshTokenGrant(rp, granted[0]!.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    }
  });

  test(`of ${PARALLEL} refresh requests with one rotating refresh token (a public client), exactly one gets tokens, and the grant is revoked`, async () => {
    const pub = await oidc.discovery(new URL(s.issuer), 'rp-public', undefined, oidc.None(), { execute: [oidc.allowInsecureRequests] });
    for (let round = 0; round < 3; round++) {
      const verifier = oidc.randomPKCECodeVerifier();
      const challenge = await oidc.calculatePKCECodeChallenge(verifier);
      const { request, callback } = await authorizeAndSignIn(s, pub, user, signedIn, { scope: 'openid offline_access', code_challenge: challenge, code_challenge_method: 'S256' });
      const first = await oidc.authorizationCodeGrant(pub, callback, { pkceCodeVerifier: verifier, expectedState: request.state, expectedNonce: request.nonce });
      expect(first.refresh_token).toBeDefined();
      const results = await Promise.allSettled(Array.from({ length: PARALLEL }, () => oidc.refreshTokenGrant(pub, first.refresh_token!)));
      const granted = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      expect(granted).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ error: 'invalid_grant' });
      // Rotated: the winner got a new refresh token, which went with the grant a reuse revokes.
      expect(granted[0]!.refresh_token).toBeDefined();
      expect(granted[0]!.refresh_token).not.toBe(first.refresh_token);
      await expect(oidc.refreshTokenGrant(pub, granted[0]!.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
      await expect(oidc.fetchUserInfo(pub, granted[0]!.access_token, oidc.skipSubjectCheck)).rejects.toMatchObject({ status: 401 });
    }
  });
});
