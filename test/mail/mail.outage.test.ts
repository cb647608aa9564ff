// Code mail through an SMTP outage, a restart and a final failure, driven through the real login endpoints.
import { randomUUID } from 'node:crypto';
import * as oidc from 'openid-client';
import { csrfOf, discover, followToCallback, startLogin, submit, type StartedLogin } from '../support/browser-less.js';
import { openDatabase } from '../../src/persistence/database.js';
import { createTestDatabase } from '../support/database.js';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { startSmtpServer } from '../support/smtp.js';
import { deleteKeys, waitUntil } from './mail-store.js';

const REDIS_URL = 'redis://127.0.0.1:6379';
const OUTAGE_MS = 60_000;
const USERS = 20;


async function newAccount(s: TestServer) {
  const u = uniqueUser('mail');
  await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
  return u;
}

async function askForCode(s: TestServer, rp: oidc.Configuration, userId: string): Promise<StartedLogin> {
  const login = await startLogin(rp, s.issuer);
  const res = await submit(login, 'identify', { userId });
  expect(res.status).toBe(303);
  // The code page, as the user sees it while the mail is on its way.
  const page = await login.agent.get(login.interactionPath);
  expect(page.status).toBe(200);
  expect(await page.text()).toContain('name="otp"');
  return login;
}

async function finishLogin(s: TestServer, rp: oidc.Configuration, login: StartedLogin, email: string): Promise<string | undefined> {
  // Retries wait at most 30 s (the cap for code mail), so each code comes within that of the restart.
  const mail = await s.smtp.waitFor((m) => m.to.includes(email) && /\b\d{8}\b/.test(m.text), 45_000);
  const otp = /\b(\d{8})\b/.exec(mail.text)![1]!;
  const res = await submit(login, 'otp', { otp });
  expect(res.status).toBe(303);
  const callback = await followToCallback(login.agent, res);
  const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
  return tokens.claims()?.preferred_username as string | undefined;
}

describe('code mail through an SMTP outage', () => {
  const prefix = `test-outage-${randomUUID()}`;
  afterAll(() => deleteKeys(REDIS_URL, `${prefix}:*`));

  test.concurrent.each(['outbox', 'bullmq'] as const)(
    '%s: with the SMTP server down for 60 s while 20 users ask for a code, every code arrives afterwards and logs its user in',
    async (mode) => {
      const s = await startTestServer({
        env: mode === 'bullmq' ? { REDIS_URL, MAIL_WORKER: 'inline' } : {},
        mailQueue: mode === 'bullmq' ? { prefix } : {},
      });
      try {
        const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
        const users = await Promise.all(Array.from({ length: USERS }, () => newAccount(s)));
        await s.smtp.stop();
        const logins = await Promise.all(users.map((u) => askForCode(s, rp, u.userId)));
        await new Promise((r) => setTimeout(r, OUTAGE_MS)); // the outage itself
        expect(s.smtp.messages).toHaveLength(0);
        await s.smtp.start();
        const names = await Promise.all(logins.map((login, i) => finishLogin(s, rp, login, users[i]!.email)));
        expect(names).toEqual(users.map((u) => u.userId));
      } finally {
        await s.close();
      }
    },
    150_000,
  );
});

describe('queued code mail and a restart of the provider', () => {
  test('mail queued in the outbox when the app closes is delivered by a new app on the same database', async () => {
    const testDb = await createTestDatabase('restart');
    // One deployment's keys: the payload is sealed with the cookie keys, codes are HMACs under the OTP key.
    const secrets = { COOKIE_KEYS: randomUUID(), OTP_HMAC_KEY: randomUUID() };
    const smtp = await startSmtpServer();
    try {
      await smtp.stop();
      const first = await startTestServer({ databaseUrl: testDb.url, smtp, env: secrets });
      const u = await newAccount(first);
      const rp = await discover(first.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
      await askForCode(first, rp, u.userId);
      await first.close();
      const between = await openDatabase({ databaseUrl: testDb.url, dataDir: '/tmp' });
      expect(await between.prisma.mailMessage.count({ where: { status: 'pending' } })).toBe(1);
      await between.close();
      await smtp.start();
      const queued = await startTestServer({ databaseUrl: testDb.url, smtp, env: secrets });
      try {
        const code = await smtp.otpFor(u.email);
        // It is the code of the first app's login flow.
        const row = await queued.db.prisma.oneTimePassword.findFirst({ where: { flow: { submittedUserId: u.userId } } });
        expect(row?.codeHmac).toBe(queued.app.services.otp.hmac('login', code));
        await waitUntil(() => queued.db.prisma.mailMessage.findFirst({ where: { status: 'sent', payload: null } }), 'the row marked sent');
      } finally {
        await queued.close();
      }
    } finally {
      await smtp.close();
      await testDb.drop();
    }
  }, 60_000);
});

describe('a code whose mail could not be sent', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  beforeAll(async () => {
    // Codes live 3 s and the SMTP server is down: each code mail is given up when its code expires.
    s = await startTestServer({ config: { otp: { length: 8, ttlSeconds: 3, resendCooldownSeconds: 0 } } });
    await s.smtp.stop();
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(() => s?.close());

  async function givenUp(userId: string): Promise<{ login: StartedLogin; csrf: string }> {
    const login = await startLogin(rp, s.issuer);
    expect((await submit(login, 'identify', { userId })).status).toBe(303);
    const page = await login.agent.get(login.interactionPath);
    const csrf = csrfOf(await page.text());
    await waitUntil(() => s.db.prisma.oneTimePassword.findFirst({ where: { flow: { submittedUserId: userId }, deliveryFailedAt: { not: null } } }), 'the code marked undelivered');
    return { login, csrf };
  }

  test.each([
    ['ja', '【エラー】 ワンタイムパスワードが送信できませんでした。'],
    ['en', '[Error] The one-time password could not be sent.'],
  ] as const)('reloading the code page shows the manual error page (%s), whose link goes back to the user ID step', async (lang, message) => {
    const u = await newAccount(s);
    const { login } = await givenUp(u.userId);
    const page = await login.agent.get(`${login.interactionPath}?lang=${lang}`);
    expect(page.status).toBe(400);
    const html = (await page.text()).replace(/\s+/g, ' ');
    expect(html).toContain(message);
    const back = await login.agent.get(login.interactionPath);
    expect(back.status).toBe(200);
    expect(await back.text()).toContain('name="userId"');
  });

  test('submitting a code on the page shows the same error, counts no failure, and the CLI lists the mail', async () => {
    const u = await newAccount(s);
    const { login, csrf } = await givenUp(u.userId);
    const res = await login.agent.post(`${login.interactionPath}/otp`, { _csrf: csrf, otp: '12345678' });
    expect(res.status).toBe(400);
    expect((await res.text()).replace(/\s+/g, ' ')).toContain('ワンタイムパスワードが送信できませんでした。');
    const account = await s.db.prisma.account.findFirst({ where: { userId: u.userId } });
    expect(account?.failedAttempts).toBe(0);
    const listed = await s.app.services.mail.undelivered({ tenantId: 't1' });
    expect(listed.some((m) => m.status === 'failed' && m.template === 'login-otp' && m.maskedTo[0] === `${u.email.slice(0, 2)}***@example.test`)).toBe(true);
  });

  test('recovery: the code page and a submitted code say the code could not be sent, and the user ID step comes back', async () => {
    const u = await newAccount(s);
    const login = await startLogin(rp, s.issuer);
    const recovery = `${login.interactionPath}/recovery`;
    const identifyPage = await login.agent.get(`${recovery}/identify`);
    const sent = await login.agent.post(`${recovery}/identify`, { _csrf: csrfOf(await identifyPage.text()), userId: u.userId });
    expect(sent.status).toBe(303);
    const codePage = await login.agent.get(`${recovery}/code`);
    expect(codePage.status).toBe(200);
    const csrf = csrfOf(await codePage.text());
    await waitUntil(
      () => s.db.prisma.oneTimePassword.findFirst({ where: { purpose: { not: 'login' }, flow: { submittedUserId: u.userId }, deliveryFailedAt: { not: null } } }),
      'the recovery code marked undelivered',
    );
    const res = await login.agent.post(`${recovery}/code`, { _csrf: csrf, otp: '12345678' });
    expect(res.status).toBe(400);
    const html = (await res.text()).replace(/\s+/g, ' ');
    expect(html).toContain('ワンタイムパスワードが送信できませんでした');
    expect(html).toContain('name="userId"');
    expect((await s.db.prisma.account.findFirst({ where: { userId: u.userId } }))?.failedAttempts).toBe(0);

    // The same on a reload of the code page, for a second try whose mail fails too.
    const again = await login.agent.post(`${recovery}/identify`, { _csrf: csrfOf(html), userId: u.userId });
    expect(again.status).toBe(303);
    await waitUntil(
      async () => (await s.db.prisma.oneTimePassword.count({ where: { purpose: { not: 'login' }, flow: { submittedUserId: u.userId }, deliveryFailedAt: { not: null } } })) >= 2,
      'the second recovery code marked undelivered',
    );
    const reload = await login.agent.get(`${recovery}/code`);
    expect(reload.status).toBe(400);
    expect((await reload.text()).replace(/\s+/g, ' ')).toContain('ワンタイムパスワードが送信できませんでした');
  });
});
