import * as oidc from 'openid-client';
import { isEmailAddress } from '../../src/mail/email-address.js';
import { parseMailJob } from '../../src/mail/mail.types.js';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent, csrfOf, discover, startLogin, submit } from '../support/browser-less.js';
import { signInToArea } from '../support/account-area.js';

const API = '/api/v1';
/** Addresses the mail layer cannot send to (or that would become several recipients, or markup). */
const BAD = ['a,b@x.io', '<img/src=x>@x.io', '"a b"@x.io', 'a@b@x.io', 'a@x', 'a@-x.io', 'a..@x.io@', 'ａ@x.io', 'a@x.io>', `${'a'.repeat(65)}@x.io`];

describe('one rule for e-mail addresses', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  let token: string;

  beforeAll(async () => {
    s = await startTestServer({ database: 'postgres' });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const backoffice = await discover(s.issuer, 'backoffice-t1', 'backoffice-t1-secret-0123456789');
    token = (await oidc.clientCredentialsGrant(backoffice, { scope: 'management' })).access_token;
  });
  afterAll(async () => {
    await s?.close();
  });

  const api = async (method: string, path: string, body: unknown) => {
    const res = await fetch(new URL(path, s.issuer), { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'accept-language': 'ja' }, body: JSON.stringify(body) });
    return { status: res.status, type: res.headers.get('content-type'), body: (await res.json()) as { errors?: Array<{ field: string; message: string }> } };
  };

  test('what the API, the account area and the mail layer accept is the same', () => {
    for (const ok of ['taro@example.jp', 'a.b+tag@sub.example.co.jp', "o'neil@x.io"]) {
      expect(isEmailAddress(ok)).toBe(true);
      expect(() => parseMailJob({ to: [ok], template: 'login-otp', locale: 'ja', params: {} })).not.toThrow();
    }
    for (const bad of BAD) {
      expect(isEmailAddress(bad)).toBe(false);
      expect(() => parseMailJob({ to: [bad], template: 'login-otp', locale: 'ja', params: {} })).toThrow(/invalid mail job/);
    }
  });

  test('the management API refuses addresses the mail layer would refuse, naming the field', async () => {
    for (const bad of BAD) {
      const u = uniqueUser('em');
      const res = await api('POST', `${API}/accounts`, { userId: u.userId, devices: [{ email: u.email }, { email: bad }], sendActivation: true });
      expect(`${bad} ${res.status}`).toBe(`${bad} 400`);
      expect(res.type).toMatch(/^application\/problem\+json/);
      expect(res.body.errors).toEqual([{ field: 'devices[1].email', message: expect.stringContaining('メールアドレスの形式が正しくありません') }]);
    }
    const u = uniqueUser('em');
    expect((await api('POST', `${API}/accounts`, { userId: u.userId, devices: [{ email: u.email }] })).status).toBe(201);
    const patched = await api('PATCH', `${API}/accounts/${u.userId}`, { devices: [{ email: 'a,b@x.io' }] });
    expect(patched.status).toBe(400);
    expect(patched.body.errors?.[0]?.field).toBe('devices[0].email');
    expect(await s.db.prisma.account.count({ where: { userId: { startsWith: 'p-em-' }, devices: { some: { email: { in: BAD } } } } })).toBe(0);
  });

  test('an account whose stored address is bad still gets pages, not server errors', async () => {
    const u = uniqueUser('em');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    // Stored before the rule existed (or by hand): the mail layer refuses it.
    await s.db.prisma.device.updateMany({ where: { accountId: account.id }, data: { email: '<img/src=x>@x.io' } });

    const login = await startLogin(rp, s.issuer);
    const identified = await submit(login, 'identify', { userId: u.userId });
    expect(identified.status).toBe(303);
    const page = await login.agent.get(login.interactionPath);
    expect(page.status).toBe(200);
    const wrong = await submit(login, 'otp', { otp: '00000000' });
    expect(wrong.status).toBe(401);

    // A fresh activation through the API, mailed: no mail can go, and the API says what it did.
    const reissued = await api('POST', `${API}/accounts/${u.userId}/activation`, { send: true });
    expect(reissued.status).toBeLessThan(500);
  });

  test('the account area refuses such an address with a message in the user\'s language', async () => {
    const u = uniqueUser('em');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    const agent = new Agent(s.issuer);
    expect((await signInToArea(s, agent, u)).status).toBe(200);
    const form = await (await agent.get('/account/devices/new')).text();
    const res = await agent.post('/account/devices/new', { _csrf: csrfOf(form), email: 'a,b@x.io', emailConfirm: 'a,b@x.io', kind: 'pc' });
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('メールアドレスの形式が正しくありません');
  });
});
