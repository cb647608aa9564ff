import { parseTenants } from '../../src/config/tenants.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { Agent, csrfOf } from '../support/browser-less.js';
import { signInToArea } from '../support/account-area.js';

describe('account area: login method change and certificates', () => {
  let s: TestServer;
  beforeAll(async () => {
    const tenants = parseTenants(
      't',
      TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, password_otp, password_certificate]'),
    );
    s = await startTestServer({ tenants });
  });
  afterAll(async () => {
    await s?.close();
  });

  async function signedIn(tenantId = 't1', client = 'rp-basic') {
    const u = uniqueUser('lm');
    const account = await s.app.services.accounts.create({ tenantId, userId: u.userId, devices: [{ email: u.email }, { email: `2-${u.email}`, kind: 'smartphone' }] });
    const agent = new Agent(s.issuer);
    const top = await signInToArea(s, agent, u, `/account/?client_id=${client}`);
    return { u, account, agent, html: await top.text() };
  }

  test('to the certificate method: new certificates with download passwords, shown in the device table and downloadable; back to otp revokes them', async () => {
    const { account, agent, html } = await signedIn();
    expect(html).toContain('ログイン方法の変更');
    const confirm = await agent.post('/account/login-method', { _csrf: csrfOf(html), method: 'password_certificate' });
    expect(confirm.status).toBe(200);
    const confirmHtml = await confirm.text();
    expect(confirmHtml).toContain('すべての端末に新しい電子証明書を発行します');
    const done = await agent.post('/account/login-method/execute', { _csrf: csrfOf(confirmHtml), method: 'password_certificate', password: 'umi-no-oto-kikoeru-9', confirm: 'umi-no-oto-kikoeru-9' });
    expect(done.status).toBe(200);
    const doneHtml = await done.text();
    const passwords = [...doneHtml.matchAll(/<code>([A-Za-z0-9]{8,})<\/code>/g)].map((m) => m[1]);
    expect(passwords).toHaveLength(2);

    const top = await (await agent.get('/account/')).text();
    for (const p of passwords) expect(top).toContain(p!);
    expect(top).not.toMatch(/<td>なし<\/td>/);
    const download = await agent.get('/account/devices/1/certificate');
    expect(download.status).toBe(200);
    expect(download.headers.get('content-type')).toBe('application/x-pkcs12');
    expect((await download.arrayBuffer()).byteLength).toBeGreaterThan(1000);

    const live = await s.app.services.certificates.listForAccount(account.id);
    expect(live.filter((c) => c.status === 'valid')).toHaveLength(2);

    // Leaving the certificate method revokes every certificate.
    const choose = await (await agent.get('/account/login-method')).text();
    const confirmOtp = await (await agent.post('/account/login-method', { _csrf: csrfOf(choose), method: 'otp' })).text();
    expect(confirmOtp).not.toContain('name="password"');
    const back = await agent.post('/account/login-method/execute', { _csrf: csrfOf(confirmOtp), method: 'otp' });
    expect(back.status).toBe(200);
    const after = await s.app.services.certificates.listForAccount(account.id);
    expect(after.every((c) => c.status === 'revoked')).toBe(true);
    expect((await s.app.services.accounts.findById(account.id))!.passwordHash).toBeNull();
    expect((await agent.get('/account/devices/1/certificate')).status).toBe(404);
  });

  test('a certificate close to its expiry can be renewed: new download password, old certificate revoked', async () => {
    const { account, agent, html } = await signedIn();
    await s.db.prisma.account.update({ where: { id: account.id }, data: { loginMethod: 'password_certificate' } });
    const device = account.devices[0]!;
    const soon = { notBefore: new Date(Date.now() - 86400_000), notAfter: new Date(Date.now() + 10 * 86400_000) };
    const old = await s.app.services.certificates.issue(account.id, device.id, soon);
    const top = await (await agent.get('/account/')).text();
    expect(top).toContain(old.downloadPassword);
    expect(top).toContain('/account/devices/1/certificate/renew');
    const renewed = await agent.post('/account/devices/1/certificate/renew', { _csrf: csrfOf(html) });
    expect(renewed.status).toBe(303);
    const list = await s.app.services.certificates.listForAccount(account.id);
    const current = list.find((c) => c.deviceId === device.id && c.status === 'valid')!;
    expect(current.id).not.toBe(old.certificate.id);
    expect(current.notAfter.getTime()).toBeGreaterThan(Date.now() + 300 * 86400_000);
    expect(list.find((c) => c.id === old.certificate.id)!.status).toBe('revoked');
    expect(await (await agent.get('/account/')).text()).toContain(current.downloadPassword);
    // A certificate far from its expiry is not renewed.
    const again = await agent.post('/account/devices/1/certificate/renew', { _csrf: csrfOf(html) });
    expect(again.status).toBe(400);
    expect(await again.text()).toContain('有効期限の30日前から');
  });

  test('a method outside the contract, a missing password and a missing CSRF token are refused', async () => {
    const { agent, html } = await signedIn();
    const bad = await agent.post('/account/login-method/execute', { _csrf: csrfOf(html), method: 'password' });
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain('選択できるログイン方法から選んでください');
    const noPassword = await agent.post('/account/login-method/execute', { _csrf: csrfOf(html), method: 'password_otp' });
    expect(noPassword.status).toBe(400);
    expect(await noPassword.text()).toContain('新しいパスワードを入力してください');
    const forged = await agent.post('/account/login-method/execute', { _csrf: 'forged', method: 'otp' });
    expect(forged.status).toBe(403);
  });

  test('with a single method in the contract the entry is absent and a forged request is a 403', async () => {
    const { agent, html } = await signedIn('t2', 'rp-t2');
    expect(html).not.toContain('/account/login-method');
    expect((await agent.get('/account/login-method')).status).toBe(403);
    const forged = await agent.post('/account/login-method/execute', { _csrf: csrfOf(html), method: 'otp' });
    expect(forged.status).toBe(403);
    expect(await forged.text()).toContain('ご契約の内容では、この操作はご利用いただけません');
  });
});
