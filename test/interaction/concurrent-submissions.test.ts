import * as oidc from 'openid-client';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { csrfOf, discover, followToCallback, startLogin, submit, type StartedLogin } from '../support/browser-less.js';

const withoutCsrf = (html: string) => html.replace(/name="_csrf" value="[^"]*"/g, '');

describe('parallel requests of one login (double clicks, several tabs)', () => {
  let s: TestServer;
  let rp: oidc.Configuration;

  beforeAll(async () => {
    s = await startTestServer({ database: 'postgres' });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    await s?.close();
  });

  async function newAccount() {
    const u = uniqueUser('par');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    return { ...u, account };
  }

  async function atCodeStep(u: { userId: string; email: string }): Promise<{ login: StartedLogin; otp: string; csrf: string }> {
    const before = s.smtp.messages.length;
    const login = await startLogin(rp, s.issuer);
    expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
    const otp = await s.smtp.otpFor(u.email, before);
    const csrf = csrfOf(await (await login.agent.get(login.interactionPath)).text());
    return { login, otp, csrf };
  }

  test('eight parallel first GETs of a new interaction all answer the same page, with one flow', async () => {
    // A few interactions, as the collision depends on how the requests interleave.
    for (let round = 0; round < 4; round++) {
      const login = await startLogin(rp, s.issuer);
      const responses = await Promise.all(Array.from({ length: 8 }, () => login.agent.get(login.interactionPath)));
      expect(responses.map((r) => r.status)).toEqual(Array(8).fill(200));
      const pages = await Promise.all(responses.map(async (r) => withoutCsrf(await r.text())));
      expect(new Set(pages).size).toBe(1);
      expect(pages[0]).toContain('name="userId"');
      expect(await s.db.prisma.loginFlow.count({ where: { interactionUid: login.uid } })).toBe(1);
    }
  });

  test('eight parallel first GETs of a recovery all lead to the same step', async () => {
    const login = await startLogin(rp, s.issuer);
    const responses = await Promise.all(Array.from({ length: 8 }, () => login.agent.get(`${login.interactionPath}/recovery`)));
    expect(responses.map((r) => r.status)).toEqual(Array(8).fill(303));
    expect(new Set(responses.map((r) => r.headers.get('location'))).size).toBe(1);
  });

  test.each([2, 5, 8])('the right code submitted %i times at once signs in once, without a failure', async (n) => {
    const u = await newAccount();
    const { login, otp, csrf } = await atCodeStep(u);
    const responses = await Promise.all(Array.from({ length: n }, () => login.agent.post(`${login.interactionPath}/otp`, { _csrf: csrf, otp })));
    const answers = await Promise.all(responses.map(async (r) => `${r.status} ${r.headers.get('location') ?? (await r.text()).slice(0, 300)}`));
    // Every answer leads where the first one does: the authorization endpoint resuming this login.
    expect(new Set(answers).size).toBe(1);
    expect(answers[0]).toMatch(/^303 .*\/auth\//);

    const callback = await followToCallback(login.agent, responses[0]!);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    expect(tokens.claims()?.preferred_username).toBe(u.userId);

    const account = await s.db.prisma.account.findUniqueOrThrow({ where: { id: u.account.id } });
    expect(account).toMatchObject({ failedAttempts: 0, lockedAt: null });
    const events = await s.db.prisma.loginEvent.findMany({ where: { accountId: u.account.id } });
    expect(events.map((e) => e.result)).toEqual(['success']);
  });

  test('a code used by another login, or a wrong code, still counts as a failure', async () => {
    const u = await newAccount();
    const first = await atCodeStep(u);
    const second = await atCodeStep(u);
    // The first login's code, in the second login (its own code is another one).
    const foreign = await second.login.agent.post(`${second.login.interactionPath}/otp`, { _csrf: second.csrf, otp: first.otp });
    expect(foreign.status).toBe(401);
    const ok = await first.login.agent.post(`${first.login.interactionPath}/otp`, { _csrf: first.csrf, otp: first.otp });
    expect(ok.status).toBe(303);
    const reused = await second.login.agent.post(`${second.login.interactionPath}/otp`, { _csrf: second.csrf, otp: first.otp });
    expect(reused.status).toBe(401);
    const wrong = await second.login.agent.post(`${second.login.interactionPath}/otp`, { _csrf: second.csrf, otp: '00000000' === second.otp ? '11111111' : '00000000' });
    expect(wrong.status).toBe(401);
    const account = await s.db.prisma.account.findUniqueOrThrow({ where: { id: u.account.id } });
    // The first login's success reset the counter; the two later tries count again.
    expect(account.failedAttempts).toBe(2);
  });
});
