import * as oidc from 'openid-client';
import { hashSecret } from '../../src/credentials/hashing.js';
import { parseTenants } from '../../src/config/tenants.js';
import { TEST_TENANTS_YAML, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent, csrfOf, discover, followToCallback, startLogin, submit, type StartedLogin } from '../support/browser-less.js';

const withoutCsrf = (html: string) => html.replace(/name="_csrf" value="[^"]*"/g, '');

describe('parallel requests of one login (double clicks, several tabs)', () => {
  let s: TestServer;
  let rp: oidc.Configuration;

  beforeAll(async () => {
    s = await startTestServer({ database: 'postgres', tenants: parseTenants('t', TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, password_otp]')) });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    await s?.close();
  });

  async function newAccount(loginMethod = 'otp') {
    const u = uniqueUser('par');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, loginMethod, devices: [{ email: u.email }] });
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

  /** A password_otp account (password `correct horse battery`) and its login at the password step. */
  async function atPasswordStep() {
    const u = await newAccount('password_otp');
    await s.app.services.accounts.setPassword(u.account.id, await hashSecret('correct horse battery'));
    const before = s.smtp.messages.length;
    const login = await startLogin(rp, s.issuer);
    expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
    const csrf = csrfOf(await (await login.agent.get(login.interactionPath)).text());
    return { u, before, login, csrf };
  }

  /**
   * Finishes a login from atPasswordStep with the code mailed since: it signs in, exactly one code
   * mail was sent, and no failure was counted.
   */
  async function signsInWithTheOneCode({ u, before, login }: Awaited<ReturnType<typeof atPasswordStep>>) {
    const otp = await s.smtp.otpFor(u.email, before);
    const done = await submit(login, 'otp', { otp });
    expect((await followToCallback(login.agent, done)).searchParams.get('code')).toBeTruthy();
    expect(s.smtp.messages.slice(before).filter((m) => m.to.includes(u.email))).toHaveLength(1);
    const account = await s.db.prisma.account.findUniqueOrThrow({ where: { id: u.account.id } });
    expect(account).toMatchObject({ failedAttempts: 0, lockedAt: null });
  }

  test('eight parallel first GETs of a new interaction all answer the same page; eight parallel first user IDs store one flow', async () => {
    // A few interactions, as the collision depends on how the requests interleave.
    for (let round = 0; round < 4; round++) {
      const login = await startLogin(rp, s.issuer);
      const responses = await Promise.all(Array.from({ length: 8 }, () => login.agent.get(login.interactionPath)));
      expect(responses.map((r) => r.status)).toEqual(Array(8).fill(200));
      const pages = await Promise.all(responses.map(async (r) => withoutCsrf(await r.text())));
      expect(new Set(pages).size).toBe(1);
      expect(pages[0]).toContain('name="userId"');
      // The user-ID page stores nothing; its submission stores the flow, once.
      expect(await s.db.prisma.loginFlow.count({ where: { interactionUid: login.uid } })).toBe(0);
      const u = await newAccount();
      const csrf = csrfOf(await (await login.agent.get(login.interactionPath)).text());
      const submits = await Promise.all(Array.from({ length: 8 }, () => login.agent.post(`${login.interactionPath}/identify`, { _csrf: csrf, userId: u.userId })));
      const statuses = submits.map((r) => r.status);
      // One moves the flow on; the others are told the ID was given already (and land on the same code page).
      expect(statuses.filter((x) => x === 303)).toHaveLength(1);
      expect(statuses.filter((x) => x !== 303)).toEqual(Array(7).fill(400));
      expect(await s.db.prisma.loginFlow.findMany({ where: { interactionUid: login.uid }, select: { state: true, submittedUserId: true } })).toEqual([
        { state: 'factor:email_otp', submittedUserId: u.userId },
      ]);
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
    expect([...new Set(answers)]).toHaveLength(1);
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

  test('the right code sent again after the login finished leads to the same place, without a failure', async () => {
    const u = await newAccount();
    const { login, otp, csrf } = await atCodeStep(u);
    const first = await login.agent.post(`${login.interactionPath}/otp`, { _csrf: csrf, otp });
    const again = await login.agent.post(`${login.interactionPath}/otp`, { _csrf: csrf, otp });
    expect(again.status).toBe(303);
    expect(again.headers.get('location')).toBe(first.headers.get('location'));
    const callback = await followToCallback(login.agent, again);
    expect(callback.searchParams.get('code')).toBeTruthy();
    const account = await s.db.prisma.account.findUniqueOrThrow({ where: { id: u.account.id } });
    expect(account).toMatchObject({ failedAttempts: 0, lockedAt: null });
  });

  test('the right password submitted 5 times at once moves the login on once, to the code step', async () => {
    const atStep = await atPasswordStep();
    const { login, csrf } = atStep;
    const responses = await Promise.all(Array.from({ length: 5 }, () => login.agent.post(`${login.interactionPath}/password`, { _csrf: csrf, password: 'correct horse battery' })));
    expect(responses.map((r) => `${r.status} ${r.headers.get('location')}`)).toEqual(Array(5).fill(`303 ${login.interactionPath}`));
    // One code mail: the losers of the race did not send codes of their own.
    await signsInWithTheOneCode(atStep);
  });

  test('the password form posted again after the login moved on to the code leads to the code step, without a failure or a second code', async () => {
    const atStep = await atPasswordStep();
    const { login, csrf } = atStep;
    const first = await login.agent.post(`${login.interactionPath}/password`, { _csrf: csrf, password: 'correct horse battery' });
    expect(first.status).toBe(303);
    // The same form again (a double click that arrives once the first has finished, a second tab):
    // the password step is behind this login, so it answers as the first did; the page asks for the code.
    for (const password of ['correct horse battery', 'something else entirely']) {
      const late = await login.agent.post(`${login.interactionPath}/password`, { _csrf: csrf, password });
      expect(`${late.status} ${late.headers.get('location')}`).toBe(`303 ${login.interactionPath}`);
    }
    expect(await (await login.agent.get(login.interactionPath)).text()).toContain('name="otp"');
    await signsInWithTheOneCode(atStep);
  });

  test('the right recovery code submitted 5 times at once moves recovery on once, without a failure', async () => {
    const u = await newAccount();
    const login = await startLogin(rp, s.issuer);
    const base = `${login.interactionPath}/recovery`;
    const entry = await login.agent.get(base);
    const csrf = csrfOf(await (await login.agent.get(entry.headers.get('location')!)).text());
    const before = s.smtp.messages.length;
    expect((await login.agent.post(`${base}/identify`, { _csrf: csrf, userId: u.userId })).status).toBe(303);
    const otp = await s.smtp.otpFor(u.email, before);
    const responses = await Promise.all(Array.from({ length: 5 }, () => login.agent.post(`${base}/code`, { _csrf: csrf, otp })));
    expect(responses.map((r) => `${r.status} ${r.headers.get('location')}`)).toEqual(Array(5).fill(`303 ${base}/question`));
    const account = await s.db.prisma.account.findUniqueOrThrow({ where: { id: u.account.id } });
    expect(account).toMatchObject({ failedAttempts: 0, lockedAt: null });
  });

  test('activation submitted several times at once (both steps) completes once, without a failure', async () => {
    const u = uniqueUser('par');
    const { account, activation } = await s.app.services.accountService.create('t1', { userId: u.userId, devices: [{ email: u.email }] }, { actor: 'api' });
    const path = new URL(activation.url).pathname;
    const agent = new Agent(s.issuer);
    const csrf = csrfOf(await (await agent.get(path)).text());
    const verified = await Promise.all(Array.from({ length: 5 }, () => agent.post(path, { _csrf: csrf, userId: u.userId, otp: activation.otp })));
    expect(verified.map((r) => `${r.status} ${r.headers.get('location')}`)).toEqual(Array(5).fill(`303 ${path}/register`));
    const registered = await Promise.all(Array.from({ length: 3 }, () => agent.post(`${path}/register`, { _csrf: csrf, questionId: 'first_pet', answer: 'ポチ' })));
    expect(registered.map((r) => `${r.status} ${r.headers.get('location')}`)).toEqual(Array(3).fill(`303 ${path}/done`));
    const after = await s.db.prisma.account.findUniqueOrThrow({ where: { id: account.id } });
    expect(after).toMatchObject({ status: 'active', failedAttempts: 0, lockedAt: null });
  });
});
