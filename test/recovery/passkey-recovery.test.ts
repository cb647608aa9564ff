import * as oidc from 'openid-client';
import { hashSecret, normalizeAnswer } from '../../src/credentials/hashing.js';
import { discover, startLogin, type StartedLogin } from '../support/browser-less.js';
import { passkeyTenants } from '../support/passkeys.js';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';


// The new passkey's ceremony runs in Chromium (test/e2e/passkey-area.browser.test.ts); here, the flow's order and refusals.
describe('recovery of an account that signs in with a passkey', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ tenants: passkeyTenants() });
  });
  afterAll(async () => {
    await s?.close();
  });

  async function newAccount(tenantId: string, method: string) {
    const u = uniqueUser('pkrcv');
    const account = await s.app.services.accounts.create({ tenantId, userId: u.userId, loginMethod: method, devices: [{ email: u.email }] });
    await s.app.services.accounts.setSecretQuestion(account.id, 'first_pet', await hashSecret(normalizeAnswer('ポチ')));
    return { ...u, account };
  }

  async function login(client: string, secret: string): Promise<StartedLogin> {
    const rp: oidc.Configuration = await discover(s.issuer, client, secret);
    return startLogin(rp, s.issuer);
  }

  const url = (l: StartedLogin, rest = '') => `${l.interactionPath}/recovery${rest}`;
  async function send(l: StartedLogin, action: string, fields: Record<string, string> = {}): Promise<Response> {
    if (!l.agent.cookies.get('csrf')) await l.agent.get((await l.agent.get(url(l))).headers.get('location')!);
    return l.agent.post(url(l, `/${action}`), { _csrf: l.agent.cookies.get('csrf')!, ...fields });
  }
  const stepAfter = (res: Response) => res.headers.get('location')?.split('/').pop();

  async function throughCode(l: StartedLogin, u: { userId: string; email: string }) {
    const before = s.smtp.messages.length;
    expect(stepAfter(await send(l, 'identify', { userId: u.userId }))).toBe('code');
    expect(stepAfter(await send(l, 'code', { otp: await s.smtp.otpFor(u.email, before) }))).toBe('question');
  }

  test.each(['passkey', 'otp_passkey'])('%s: the right answer leads to a new passkey (no activation, no password); a bad answer from the browser is shown in place', async (method) => {
    const u = await newAccount('t1', method);
    const l = await login('rp-basic', 'rp-basic-secret-0123456789');
    await throughCode(l, u);
    // The passkey page cannot be reached before the question.
    expect(stepAfter(await l.agent.get(url(l, '/passkey')))).toBe('question');
    const answered = await send(l, 'question', { answer: 'ポチ' });
    expect(stepAfter(answered)).toBe('passkey');
    const page = await l.agent.get(url(l, '/passkey'));
    const html = await page.text();
    expect(page.status).toBe(200);
    expect(html).toContain('data-passkey="register"');
    expect(html).toMatch(/<script id="passkey-options" type="application\/json">\{"challenge":/);
    const bad = await send(l, 'passkey', { name: 'new', response: '{"id":"x"}' });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain('パスキーの応答を読み取れませんでした。');
    const after = (await s.app.services.accounts.findById(u.account.id))!;
    expect(after).toMatchObject({ status: 'active', loginMethod: method, passwordHash: null });
    expect(await s.db.prisma.oneTimePassword.count({ where: { accountId: u.account.id, purpose: 'activation' } })).toBe(0);
    // Still at the passkey step: it can be tried again.
    expect(stepAfter(await l.agent.get(url(l)))).toBe('passkey');
  });

  test('passkey_recovery: false — the question page sends to the support desk, and a right answer posted anyway changes nothing', async () => {
    const u = await newAccount('t2', 'passkey');
    const l = await login('rp-t2', 'rp-t2-secret-01234567890');
    await throughCode(l, u);
    const html = await (await l.agent.get(url(l, '/question'))).text();
    expect(html).toContain('パスキーをなくした場合にこの画面から認証情報を再設定することはできません');
    expect(html).not.toContain('name="answer"');
    const forced = await send(l, 'question', { answer: 'ポチ' });
    expect(forced.status).toBe(409);
    expect(stepAfter(await l.agent.get(url(l)))).toBe('question');
    expect(await s.db.prisma.oneTimePassword.count({ where: { accountId: u.account.id, purpose: 'activation' } })).toBe(0);
    // An otp account of the same tenant still recovers as before (a fresh activation: it has no password).
    const other = await newAccount('t2', 'otp');
    const l2 = await login('rp-t2', 'rp-t2-secret-01234567890');
    await throughCode(l2, other);
    expect(stepAfter(await send(l2, 'question', { answer: 'ポチ' }))).toBe('done');
  });
});
