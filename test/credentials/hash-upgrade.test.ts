import * as oidc from 'openid-client';
import { pino } from 'pino';
import { parseTenants } from '../../src/config/tenants.js';
import { needsRehash, normalizeAnswer, verifySecret, hashSecret } from '../../src/credentials/hashing.js';
import type { FactorContext } from '../../src/login/factor.js';
import { PasswordFactor } from '../../src/login/factors/password.factor.js';
import type { AccountRepository } from '../../src/persistence/account.repository.js';
import { discover, followToCallback, startLogin, submit, type StartedLogin } from '../support/browser-less.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { legacyScryptHash } from '../support/legacy-hash.js';

const TENANTS = parseTenants('hash upgrade tenants', TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, password, password_otp]'));
const PASSWORD = 'Umi-no-Soko-no-Tsuki-58';
const CURRENT = /^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/;

describe('hashes made with older parameters are upgraded on the next successful check', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  beforeAll(async () => {
    s = await startTestServer({ tenants: TENANTS });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    await s?.close();
  });

  const stored = async (id: string) => s.db.prisma.account.findUniqueOrThrow({ where: { id }, select: { passwordHash: true, secretAnswerHash: true } });

  /** An active t1 account whose password and secret answer ('ポチ') were hashed by the scrypt scheme. */
  async function legacyAccount(loginMethod: 'password' | 'otp') {
    const u = uniqueUser('hash');
    const a = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, loginMethod, devices: [{ email: u.email }] });
    await s.app.services.accounts.setSecretQuestion(a.id, 'first_pet', await legacyScryptHash(normalizeAnswer('ポチ')));
    if (loginMethod === 'password') await s.app.services.accounts.setPassword(a.id, await legacyScryptHash(PASSWORD));
    return { ...u, id: a.id };
  }

  async function signIn(userId: string, password: string): Promise<{ login: StartedLogin; res: Response }> {
    const login = await startLogin(rp, s.issuer);
    expect((await submit(login, 'identify', { userId })).status).toBe(303);
    return { login, res: await submit(login, 'password', { password }) };
  }

  async function tokensOf(login: StartedLogin, res: Response) {
    const cb = await followToCallback(login.agent, res);
    return oidc.authorizationCodeGrant(rp, cb, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
  }

  test('password login: a wrong password leaves the scrypt hash; the right one signs in and stores argon2id, which then works', async () => {
    const u = await legacyAccount('password');
    const legacy = (await stored(u.id)).passwordHash!;
    expect(legacy).toMatch(/^scrypt\$32768\$8\$1\$/);

    const wrong = await signIn(u.userId, `${PASSWORD}x`);
    expect(wrong.res.status).toBe(401);
    expect((await stored(u.id)).passwordHash).toBe(legacy);

    const right = await signIn(u.userId, PASSWORD);
    expect(right.res.status).toBe(303);
    expect((await tokensOf(right.login, right.res)).claims()).toMatchObject({ amr: ['pwd'], preferred_username: u.userId });
    const upgraded = (await stored(u.id)).passwordHash!;
    expect(upgraded).toMatch(CURRENT);
    expect(needsRehash(upgraded)).toBe(false);
    expect(await verifySecret(PASSWORD, upgraded)).toBe(true);
    expect(await verifySecret(`${PASSWORD}x`, upgraded)).toBe(false);
    // The secret answer is only upgraded where it is checked (recovery).
    expect((await stored(u.id)).secretAnswerHash).toMatch(/^scrypt\$/);

    // The new hash signs in; a current hash is not rewritten.
    const again = await signIn(u.userId, PASSWORD);
    expect(again.res.status).toBe(303);
    expect((await tokensOf(again.login, again.res)).claims()).toMatchObject({ amr: ['pwd'] });
    expect((await stored(u.id)).passwordHash).toBe(upgraded);
    // A wrong password against the new hash is still wrong.
    expect((await signIn(u.userId, 'Umi-no-Soko-no-Tsuki-59')).res.status).toBe(401);

    const events = await s.db.prisma.loginEvent.findMany({ where: { submittedUserId: u.userId }, orderBy: { createdAt: 'asc' } });
    expect(events.map((e) => e.result)).toEqual(['wrong_password', 'success', 'success', 'wrong_password']);
  });

  test('a locked account is not upgraded, even with the right password', async () => {
    const u = await legacyAccount('password');
    const legacy = (await stored(u.id)).passwordHash!;
    await s.db.prisma.account.update({ where: { id: u.id }, data: { lockedAt: new Date() } });
    expect((await signIn(u.userId, PASSWORD)).res.status).toBe(403);
    expect((await stored(u.id)).passwordHash).toBe(legacy);
  });

  /** The password factor on its own, with the account as the login read it, and a real repository behind. */
  async function factorContext(accountId: string): Promise<FactorContext> {
    const { tenant, client } = s.app.services.tenants.client('rp-basic')!;
    const flow = await s.app.services.flows.findOrCreate({ interactionUid: `hash-upgrade-${accountId}`, tenantId: tenant.id, clientId: client.client_id, expiresAt: new Date(Date.now() + 60_000) });
    const account = await s.app.services.accounts.findById(accountId);
    return { flow, account, live: true, tenant, client, locale: 'ja', ip: '127.0.0.1', userAgent: null, flowUrl: '/interaction/x' };
  }

  /** A real logger whose lines are kept, parsed. */
  function capturingLogger() {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ base: null, timestamp: false }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    return { logger, lines };
  }

  test('a password changed after the login read the account is not overwritten by the upgrade', async () => {
    const u = await legacyAccount('password');
    const ctx = await factorContext(u.id);
    // The account changes its password while this login checks the old one.
    const changed = await hashSecret('Kawa-no-Nagare-no-Hoshi-77');
    await s.app.services.accounts.setPassword(u.id, changed);

    const { logger, lines } = capturingLogger();
    const factor = new PasswordFactor({ accounts: s.app.services.accounts, logger });
    expect(await factor.submit(ctx, { password: PASSWORD })).toEqual({ kind: 'passed' });
    expect((await stored(u.id)).passwordHash).toBe(changed);
    expect(lines).toEqual([]);
  });

  test('an upgrade that fails is logged (without the hashes) and the login goes on', async () => {
    const u = await legacyAccount('password');
    const ctx = await factorContext(u.id);
    const legacy = ctx.account!.passwordHash!;
    const failing: Pick<AccountRepository, 'upgradePasswordHash'> = {
      upgradePasswordHash: async (_id, current) => {
        throw new Error(`connection lost\nUPDATE accounts SET password_hash WHERE password_hash = ${current}`);
      },
    };
    const { logger, lines } = capturingLogger();
    const factor = new PasswordFactor({ accounts: failing, logger });
    expect(await factor.submit(ctx, { password: PASSWORD })).toEqual({ kind: 'passed' });
    expect((await stored(u.id)).passwordHash).toBe(legacy);
    expect(lines).toEqual([{ level: 40, accountId: u.id, error: { name: 'Error', message: 'connection lost' }, msg: 'password hash upgrade failed' }]);
    expect(JSON.stringify(lines)).not.toMatch(/scrypt|argon2/);
  });

  describe('recovery: the secret answer', () => {
    const url = (l: StartedLogin, rest = '') => `${l.interactionPath}/recovery${rest}`;
    async function send(l: StartedLogin, action: string, fields: Record<string, string> = {}): Promise<Response> {
      if (!l.agent.cookies.get('csrf')) {
        const entry = await l.agent.get(url(l));
        await l.agent.get(entry.headers.get('location')!);
      }
      return l.agent.post(url(l, `/${action}`), { _csrf: l.agent.cookies.get('csrf')!, ...fields });
    }

    test('a wrong answer leaves the scrypt hash; the right one passes and stores argon2id, which then works', async () => {
      const u = await legacyAccount('otp');
      const legacy = (await stored(u.id)).secretAnswerHash!;
      expect(legacy).toMatch(/^scrypt\$/);
      const l = await startLogin(rp, s.issuer);
      const before = s.smtp.messages.length;
      expect((await send(l, 'identify', { userId: u.userId })).status).toBe(303);
      const coded = await send(l, 'code', { otp: await s.smtp.otpFor(u.email, before) });
      expect(coded.headers.get('location')).toBe(url(l, '/question'));

      expect((await send(l, 'question', { answer: 'タマ' })).status).toBe(401);
      expect((await stored(u.id)).secretAnswerHash).toBe(legacy);

      const answered = await send(l, 'question', { answer: 'ﾎﾟﾁ ' });
      expect(answered.status).toBe(303);
      expect(answered.headers.get('location')).toBe(url(l, '/done'));
      const upgraded = (await stored(u.id)).secretAnswerHash!;
      expect(upgraded).toMatch(CURRENT);
      expect(await verifySecret(normalizeAnswer('ポチ'), upgraded)).toBe(true);
      expect(await verifySecret(normalizeAnswer('タマ'), upgraded)).toBe(false);
    });
  });
});
