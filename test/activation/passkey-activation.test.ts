import { parseTenants } from '../../src/config/tenants.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { Agent, csrfOf } from '../support/browser-less.js';

// The ceremony itself runs in Chromium (test/e2e/passkey-area.browser.test.ts); here, what the server refuses.
describe('activation of a passkey method', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ tenants: parseTenants('t', TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, passkey, otp_passkey]')) });
  });
  afterAll(async () => {
    await s?.close();
  });

  async function atRegister(loginMethod: string) {
    const u = uniqueUser('pkact');
    const { account, activation } = await s.app.services.accountService.create('t1', { userId: u.userId, devices: [{ email: u.email }], loginMethod }, { actor: 'api' });
    const agent = new Agent(s.issuer);
    const path = new URL(activation.url).pathname;
    const page = await agent.get(path + new URL(activation.url).search);
    const verified = await agent.post(path, { _csrf: csrfOf(await page.text()), userId: u.userId, otp: activation.otp });
    expect(verified.headers.get('location')).toBe('/activation/t1/register');
    const html = await (await agent.get('/activation/t1/register')).text();
    return { u, account, agent, html };
  }

  test.each(['passkey', 'otp_passkey'])('%s: the page asks for a passkey (options in a data block, no password), and without one the account stays waiting', async (method) => {
    const { account, agent, html } = await atRegister(method);
    expect(html).toContain('data-passkey="register"');
    expect(html).toMatch(/<script id="passkey-options" type="application\/json">\{"challenge":/);
    expect(html).not.toContain('name="password"');
    expect(html).toContain('src="/static/js/passkey.js"');
    // No inline script: the CSP allows scripts from our origin only.
    expect(html).not.toMatch(/<script>(?!<\/script>)/);

    const none = await agent.post('/activation/t1/register', { _csrf: csrfOf(html), questionId: 'first_pet', answer: 'ポチ', passkeyName: 'PC', response: '' });
    expect(none.status).toBe(400);
    expect(await none.text()).toContain('パスキーの応答を読み取れませんでした。');
    const forged = await agent.post('/activation/t1/register', {
      _csrf: csrfOf(html),
      questionId: 'first_pet',
      answer: 'ポチ',
      passkeyName: 'PC',
      response: JSON.stringify({ id: 'AAAA', rawId: 'AAAA', type: 'public-key', response: { clientDataJSON: 'AAAA', attestationObject: 'AAAA' }, clientExtensionResults: {} }),
    });
    expect(forged.status).toBe(400);
    const after = (await s.app.services.accounts.findById(account.id))!;
    expect(after.status).toBe('pending_activation');
    expect(after.secretAnswerHash).toBeNull();
    expect(await s.db.prisma.passkey.count({ where: { accountId: account.id } })).toBe(0);
  });

  test('a password method still gets the password fields and no passkey', async () => {
    const plain = await atRegister('otp');
    expect(plain.html).not.toContain('data-passkey');
    expect(plain.html).not.toContain('passkey.js');
  });
});
