// Webhook events of a user's own credential changes: a password reset through recovery raises
// account.password_reset, a secret question changed in the account area secret_question.changed.
// Driven through the real pages, received by a real HTTP receiver, signatures checked.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { hashSecret, normalizeAnswer } from '../../src/credentials/hashing.js';
import { verifySignature } from '../../src/webhooks/webhook-signature.js';
import { Agent, csrfOf, discover, startLogin, type StartedLogin } from '../support/browser-less.js';
import { signInToArea } from '../support/account-area.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { waitUntil } from '../mail/mail-store.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

// Recovery's password branch needs accounts that sign in with a password.
const TENANTS = parseTenants('webhook account-event tenants', TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, password, password_otp]'));
const NEW_PASSWORD = 'new-Harbour-Quince-47';

/** The project's polling wait (test/mail/mail-store.ts), with the description first as these tests read. */
const until = <T>(what: string, probe: () => T | Promise<T>) => waitUntil(probe, what);

describe('webhook events of credential changes', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  let server: Server;
  let secret: string;
  const received: Array<{ headers: IncomingHttpHeaders; raw: string; body: Json }> = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        received.push({ headers: req.headers, raw, body: JSON.parse(raw) as Json });
        res.end('ok');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    s = await startTestServer({ tenants: TENANTS, env: { WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true', WEBHOOK_POLL_INTERVAL: '0.2' } });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const { port } = server.address() as AddressInfo;
    ({ secret } = await s.app.services.webhooks.register('t1', { url: `http://127.0.0.1:${port}/hook` }, null));
  });
  afterAll(async () => {
    await s?.close();
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  });

  const arrived = (type: string, userId: string) => until(`${type} for ${userId}`, () => received.find((r) => r.body.type === type && r.body.data.userId === userId));

  async function newAccount(method: 'otp' | 'password_otp') {
    const u = uniqueUser('hkev');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    await s.app.services.accounts.setSecretQuestion(account.id, 'first_pet', await hashSecret(normalizeAnswer('ポチ')));
    if (method !== 'otp') {
      await s.db.prisma.account.update({ where: { id: account.id }, data: { loginMethod: method } });
      await s.app.services.accounts.setPassword(account.id, await hashSecret('old-Lantern-Walrus-91'));
    }
    return u;
  }

  test('a password reset through recovery raises account.password_reset, signed, without secrets', async () => {
    const u = await newAccount('password_otp');
    const l: StartedLogin = await startLogin(rp, s.issuer);
    const recovery = `${l.interactionPath}/recovery`;
    const entry = await l.agent.get(recovery);
    expect(entry.status).toBe(303);
    await l.agent.get(entry.headers.get('location')!);
    const send = (step: string, fields: Record<string, string>) => l.agent.post(`${recovery}/${step}`, { _csrf: l.agent.cookies.get('csrf')!, ...fields });
    const before = s.smtp.messages.length;
    expect((await send('identify', { userId: u.userId })).status).toBe(303);
    expect((await send('code', { otp: await s.smtp.otpFor(u.email, before) })).status).toBe(303);
    expect((await send('question', { answer: 'ポチ' })).status).toBe(303);
    const set = await send('password', { password: NEW_PASSWORD, confirm: NEW_PASSWORD });
    expect(set.status).toBe(303);
    expect(set.headers.get('location')).toMatch(/\/done$/);

    const got = await arrived('account.password_reset', u.userId);
    expect(got.body).toMatchObject({ tenant: 't1', data: { userId: u.userId, via: 'recovery' } });
    expect(verifySignature(secret, got.raw, got.headers['anshin-signature'] as string)).toBe(true);
    expect(got.raw).not.toContain(NEW_PASSWORD);
    expect(got.raw).not.toMatch(/argon2|scrypt|ポチ/);
  });

  test('a secret question changed in the account area raises secret_question.changed, without the question or the answer', async () => {
    const u = await newAccount('otp');
    const agent = new Agent(s.issuer);
    await signInToArea(s, agent, u);
    const form = await (await agent.get('/account/secret-question')).text();
    const next = await agent.post('/account/secret-question', { _csrf: csrfOf(form), questionId: 'birthplace', answer: 'Yokohama' });
    expect(next.status).toBe(303);
    const confirm = await (await agent.get('/account/secret-question/confirm')).text();
    expect((await agent.post('/account/secret-question/confirm', { _csrf: csrfOf(confirm) })).status).toBe(303);

    const got = await arrived('secret_question.changed', u.userId);
    // Which question an account chose narrows the guess of its answer: the event names neither.
    expect(got.body.data).toEqual({ userId: u.userId });
    expect(got.raw).not.toMatch(/birthplace|first_pet|yokohama/i);
    expect(verifySignature(secret, got.raw, got.headers['anshin-signature'] as string)).toBe(true);
  });
});
