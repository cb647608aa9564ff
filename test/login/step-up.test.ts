// Step-up: a browser signed in with a weaker method meets a site asking for a stronger one. The
// login starts at the missing factor of the session's account; 「別のユーザIDでログイン」 there must
// lead to the user ID page for another account, not back into the same step-up.
import * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { hashSecret } from '../../src/credentials/hashing.js';
import { csrfOf, discover, followToCallback, startLogin, submit } from '../support/browser-less.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';

const TENANTS = parseTenants('step-up test tenants', TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, password, password_otp]'));
const PASSWORD = 'Step-Up-Lantern-73';
const ACR_PASSWORD_OTP = 'urn:anshin-login:acr:password-otp';

describe('step-up', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  beforeAll(async () => {
    s = await startTestServer({ tenants: TENANTS });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(() => s?.close());

  async function passwordAccount() {
    const u = uniqueUser('stepup');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }], loginMethod: 'password' });
    await s.app.services.accounts.setPassword(account.id, await hashSecret(PASSWORD));
    return u;
  }

  test('「別のユーザIDでログイン」 on a step-up page leads to the user ID page, and the other account signs in from there', async () => {
    const a = await passwordAccount();
    const b = await passwordAccount();
    // Signed in as A with a password.
    const first = await startLogin(rp, s.issuer);
    expect((await submit(first, 'identify', { userId: a.userId })).status).toBe(303);
    const signedIn = await followToCallback(first.agent, await submit(first, 'password', { password: PASSWORD }));
    expect(signedIn.searchParams.get('code')).toBeTruthy();

    // The site asks for password + OTP: the login starts at A's missing factor, the code.
    const stepUp = await startLogin(rp, s.issuer, { acr_values: ACR_PASSWORD_OTP }, first.agent);
    const before = s.smtp.messages.length;
    const codePage = await (await stepUp.agent.get(stepUp.interactionPath)).text();
    expect(codePage).toContain('name="otp"');
    expect(codePage).toContain('別のユーザIDでログイン');
    await s.smtp.otpFor(a.email, before);

    const restarted = await stepUp.agent.post(`${stepUp.interactionPath}/restart`, { _csrf: csrfOf(codePage) });
    expect(restarted.status).toBe(303);
    const identify = await stepUp.agent.get(stepUp.interactionPath);
    expect(identify.status).toBe(200);
    const html = await identify.text();
    expect(html).toContain('name="userId"');
    expect(html).not.toContain('name="otp"');

    // B from there: B's own method with the site's stronger one, from its first factor.
    expect((await submit(stepUp, 'identify', { userId: b.userId })).status).toBe(303);
    const passwordPage = await (await stepUp.agent.get(stepUp.interactionPath)).text();
    expect(passwordPage).toContain('name="password"');
    const sinceB = s.smtp.messages.length;
    expect((await submit(stepUp, 'password', { password: PASSWORD })).status).toBe(303);
    const otp = await s.smtp.otpFor(b.email, sinceB);
    const done = await submit(stepUp, 'otp', { otp });
    expect(done.status).toBe(303);
    // The browser's session was A's: oidc-provider has it confirm signing A out (its form), then B is in.
    const confirm = await stepUp.agent.get(new URL(done.headers.get('location')!, s.issuer).pathname);
    const form = await confirm.text();
    const action = /<form[^>]*action="([^"]+)"/.exec(form)?.[1];
    expect(action).toBeDefined();
    const fields = Object.fromEntries([...form.matchAll(/<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    expect(fields.logout).toBe('yes');
    const signedOut = await stepUp.agent.post(new URL(action!.replace(/&amp;/g, '&'), s.issuer).pathname, fields);
    const callback = await followToCallback(stepUp.agent, signedOut);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: stepUp.verifier, expectedState: stepUp.state, expectedNonce: stepUp.nonce });
    expect(tokens.claims()).toMatchObject({ preferred_username: b.userId, acr: ACR_PASSWORD_OTP });
  });
});
