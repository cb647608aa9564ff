// The login path reads accounts, flows and codes with raw SQL (src/persistence/sql.ts): the objects
// must be exactly what Prisma returns for the same rows, on PostgreSQL and on the embedded PGlite,
// and the statements that move a flow must let only one of two identical submissions through.
import { randomUUID } from 'node:crypto';
import { jest } from '@jest/globals';
import { AccountRepository } from '../../src/persistence/account.repository.js';
import type { Database } from '../../src/persistence/database.js';
import { LoginContextRepository } from '../../src/persistence/login-context.repository.js';
import { LoginFlowRepository } from '../../src/persistence/login-flow.repository.js';
import { OidcPayloadRepository } from '../../src/persistence/oidc-payload.repository.js';
import { OneTimePasswordRepository } from '../../src/persistence/one-time-password.repository.js';
import { LoginHandoff } from '../../src/login/login-handoff.js';
import { bothDatabases } from '../support/database.js';

const drivers = bothDatabases('login_path');

describe.each(drivers)('login path SQL on %s', (_name, open) => {
  let db: Database;
  let done: () => Promise<void>;
  beforeAll(async () => {
    ({ db, done } = await open());
  });
  afterAll(() => done());

  async function seed() {
    const accounts = new AccountRepository(db.prisma, db.sql);
    const userId = `u-${randomUUID().slice(0, 8)}`;
    const account = await accounts.create({ tenantId: 't1', userId, devices: [{ email: `${userId}@a.example` }, { email: `${userId}@b.example`, kind: 'smartphone', verified: false }] });
    await db.prisma.account.update({ where: { id: account.id }, data: { lockedAt: new Date(), locale: 'en', passwordHash: 'h', failedAttempts: 3 } });
    return { accounts, account, userId };
  }

  it('reads an account with its devices exactly as Prisma does', async () => {
    const { accounts, account, userId } = await seed();
    const viaPrisma = await db.prisma.account.findUnique({ where: { id: account.id }, include: { devices: { orderBy: { number: 'asc' } } } });
    expect(await accounts.findById(account.id)).toEqual(viaPrisma);
    expect(await accounts.findByUserId('t1', userId)).toEqual(viaPrisma);
    expect(await accounts.findByUserId('t2', userId)).toBeNull();
    expect(await accounts.findById('not-a-uuid')).toBeNull();
  });

  it('loads the interaction, its flow, the account, the newest code and a submitted ID in one statement', async () => {
    const { account, userId } = await seed();
    const flows = new LoginFlowRepository(db.prisma, db.sql);
    const codes = new OneTimePasswordRepository(db.prisma, db.sql);
    const payloads = new OidcPayloadRepository(db.prisma, db.sql);
    const contexts = new LoginContextRepository(db.sql, { c1: 't1' });
    const uid = `uid-${randomUUID()}`;

    expect(await contexts.load(uid)).toEqual({ interaction: null, flow: null, account: null, latestCode: null });

    await payloads.upsert('Interaction', uid, { uid, params: { client_id: 'c1' } }, 600);
    // Before the flow is stored, the submitted ID is looked up in the tenant of the interaction's client.
    expect((await contexts.load(uid, userId)).submitted).toEqual({ userId, account: expect.objectContaining({ id: account.id }) });
    const flow = await flows.create({ interactionUid: uid, tenantId: 't1', clientId: 'c1', expiresAt: new Date(Date.now() + 600_000) });
    expect(await flows.create({ interactionUid: uid, tenantId: 't1', clientId: 'c1', expiresAt: new Date() })).toEqual(flow);
    expect(await flows.transition(flow.id, 'identify', { accountId: account.id, submittedUserId: userId, method: 'otp', completedFactors: ['x'], state: 'factor:email_otp' })).toBe(true);
    expect(await flows.transition(flow.id, 'identify', { state: 'factor:email_otp' })).toBe(false);
    await codes.issue({ flowId: flow.id, accountId: account.id, purpose: 'login', codeHmac: 'first', expiresAt: new Date(Date.now() + 600_000) });
    const second = await codes.issue({ flowId: flow.id, accountId: account.id, purpose: 'login', codeHmac: 'second', expiresAt: new Date(Date.now() + 600_000) });

    // Two codes of the same millisecond: the later is still the newest (it retired the earlier).
    await db.sql.query('UPDATE one_time_passwords SET created_at = $2 WHERE flow_id = $1::uuid', [flow.id, second.createdAt]);
    expect((await codes.latestForFlow(flow.id, 'login'))?.id).toBe(second.id);
    const loaded = await contexts.load(uid, userId);
    expect(loaded.flow).toEqual(await db.prisma.loginFlow.findUnique({ where: { id: flow.id } }));
    expect(loaded.flow?.completedFactors).toEqual(['x']);
    expect(loaded.account).toEqual(await db.prisma.account.findUnique({ where: { id: account.id }, include: { devices: { orderBy: { number: 'asc' } } } }));
    expect(loaded.latestCode).toEqual(await db.prisma.oneTimePassword.findUnique({ where: { id: second.id } }));
    expect(loaded.submitted).toEqual({ userId, account: loaded.account });
    expect((await contexts.load(uid, 'nobody')).submitted).toEqual({ userId: 'nobody', account: null });
    // The earlier code was retired by the later one, in the same statement that stored it.
    expect(await db.prisma.oneTimePassword.count({ where: { flowId: flow.id, consumedAt: null } })).toBe(1);

    // oidc-provider's read of the interaction is answered from the row loaded with the flow.
    await db.sql.query("UPDATE oidc_payloads SET payload = '{\"changed\": true}' WHERE id = $1", [uid]);
    const seen = await payloads.withPrefetched('Interaction', { [uid]: loaded.interaction }, () => payloads.find('Interaction', uid));
    expect(seen).toEqual({ uid, params: { client_id: 'c1' } });
    expect(await payloads.find('Interaction', uid)).toEqual({ changed: true });
  });

  it('a token request reads its code with the grant and the session in one statement', async () => {
    let statements = 0;
    const counted = { query: <Row extends object>(text: string, params?: readonly unknown[]) => (statements++, db.sql.query<Row>(text, params)) };
    const payloads = new OidcPayloadRepository(db.prisma, counted);
    const [code, grantId, sessionUid, refresh] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    await payloads.upsert('Grant', grantId, { jti: grantId, accountId: 'a1' }, 600);
    await payloads.upsert('Session', randomUUID(), { uid: sessionUid, accountId: 'a1' }, 600);
    await payloads.upsert('AuthorizationCode', code, { jti: code, grantId, sessionUid }, 60);
    await payloads.upsert('RefreshToken', refresh, { jti: refresh, grantId: randomUUID(), sessionUid: randomUUID() }, 600);

    statements = 0;
    await payloads.withTokenPrefetch(async () => {
      expect(await payloads.find('AuthorizationCode', code)).toEqual({ jti: code, grantId, sessionUid });
      expect(await payloads.findByUid('Session', sessionUid)).toEqual({ uid: sessionUid, accountId: 'a1' });
      expect(await payloads.find('Grant', grantId)).toEqual({ jti: grantId, accountId: 'a1' });
      expect(statements).toBe(1);
      // What the request changes is read again, not answered from what was read before.
      await payloads.consume('AuthorizationCode', code);
      expect(await payloads.find('AuthorizationCode', code)).toMatchObject({ jti: code, consumed: expect.any(Number) });
      await payloads.upsert('Session', 'another', { uid: sessionUid, accountId: 'a2' }, 600);
      expect((await payloads.findByUid('Session', sessionUid))?.accountId).toBeDefined();
      await payloads.revokeByGrantId(grantId);
      expect(await payloads.find('AuthorizationCode', code)).toBeUndefined();
      await payloads.destroy('Grant', grantId);
      expect(await payloads.find('Grant', grantId)).toBeUndefined();
    });

    // A token whose grant and session are gone: both are known not to exist, without more statements.
    statements = 0;
    await payloads.withTokenPrefetch(async () => {
      expect(await payloads.find('RefreshToken', refresh)).toMatchObject({ jti: refresh });
      const { grantId: gone, sessionUid: ended } = (await payloads.find('RefreshToken', refresh)) as { grantId: string; sessionUid: string };
      expect(await payloads.find('Grant', gone)).toBeUndefined();
      expect(await payloads.findByUid('Session', ended)).toBeUndefined();
      expect(statements).toBe(1);
      // An unknown token: nothing else is remembered.
      expect(await payloads.find('AuthorizationCode', 'no-such-code')).toBeUndefined();
    });
    // Outside the scope nothing is remembered.
    statements = 0;
    expect(await payloads.find('RefreshToken', refresh)).toMatchObject({ jti: refresh });
    expect(await payloads.find('Grant', grantId)).toBeUndefined();
    expect(statements).toBe(2);
  });

  it('stores a flow at its first user-ID submission, once, and moves a restarted one', async () => {
    const flows = new LoginFlowRepository(db.prisma, db.sql);
    const uid = `uid-${randomUUID()}`;
    const input = { id: randomUUID(), interactionUid: uid, tenantId: 't1', clientId: 'c1', expiresAt: new Date(Date.now() + 600_000) };
    const data = { accountId: null, submittedUserId: 'someone', method: 'otp', completedFactors: [], state: 'factor:email_otp' };
    const both = await Promise.all([flows.createIdentified(input, data), flows.createIdentified({ ...input, id: randomUUID() }, data)]);
    expect(both.filter((id) => id !== null)).toHaveLength(1);
    const stored = await flows.findByInteraction(uid);
    expect(stored).toMatchObject({ state: 'factor:email_otp', submittedUserId: 'someone', tenantId: 't1' });
    await flows.update(stored!.id, { state: 'identify', submittedUserId: null, method: null });
    expect(await flows.createIdentified({ ...input, id: randomUUID() }, { ...data, submittedUserId: 'other' })).toBe(stored!.id);
    expect(await flows.findByInteraction(uid)).toMatchObject({ id: stored!.id, submittedUserId: 'other', state: 'factor:email_otp' });
  });

  it('completes a flow once: two identical submissions, one completion, one event, the code consumed', async () => {
    const { account, userId } = await seed();
    await db.prisma.account.update({ where: { id: account.id }, data: { lockedAt: null } });
    const flows = new LoginFlowRepository(db.prisma, db.sql);
    const codes = new OneTimePasswordRepository(db.prisma, db.sql);
    const flow = await flows.create({ interactionUid: `uid-${randomUUID()}`, tenantId: 't1', clientId: 'c1', expiresAt: new Date(Date.now() + 600_000) });
    await flows.transition(flow.id, 'identify', { accountId: account.id, submittedUserId: userId, method: 'otp', state: 'factor:email_otp' });
    const code = await codes.issue({ flowId: flow.id, accountId: account.id, purpose: 'login', codeHmac: 'c', expiresAt: new Date(Date.now() + 600_000) });
    const complete = () =>
      flows.complete({
        flowId: flow.id,
        from: 'factor:email_otp',
        completedFactors: ['email_otp'],
        accountId: account.id,
        locale: 'ja',
        consumeCodeId: code.id,
        event: { tenantId: 't1', submittedUserId: userId, clientId: 'c1', method: 'otp', sourceIp: '192.0.2.1', userAgent: 'jest' },
      });
    const results = await Promise.all([complete(), complete()]);
    const winners = results.filter((r) => r !== null);
    expect(winners).toHaveLength(1);
    expect(winners[0]).toMatchObject({ succeeded: true, previousLoginAt: null, seenIp: false, account: { locale: 'ja' } });
    const after = await db.prisma.account.findUniqueOrThrow({ where: { id: account.id } });
    expect(after).toMatchObject({ failedAttempts: 0, lastLoginIp: '192.0.2.1', locale: 'ja' });
    expect(winners[0]!.account!.updatedAt).toEqual(after.updatedAt);
    expect(await db.prisma.loginEvent.findMany({ where: { accountId: account.id }, select: { result: true, sourceIp: true, userAgent: true } })).toEqual([
      { result: 'success', sourceIp: '192.0.2.1', userAgent: 'jest' },
    ]);
    expect((await db.prisma.oneTimePassword.findUniqueOrThrow({ where: { id: code.id } })).consumedAt).not.toBeNull();
    expect((await db.prisma.loginFlow.findUniqueOrThrow({ where: { id: flow.id } })).state).toBe('complete');
  });

  it('does not complete when the code was used meanwhile, and records a lock that landed first', async () => {
    const { account, userId } = await seed(); // locked
    const flows = new LoginFlowRepository(db.prisma, db.sql);
    const codes = new OneTimePasswordRepository(db.prisma, db.sql);
    const flow = await flows.create({ interactionUid: `uid-${randomUUID()}`, tenantId: 't1', clientId: 'c1', expiresAt: new Date(Date.now() + 600_000) });
    await flows.transition(flow.id, 'identify', { accountId: account.id, submittedUserId: userId, method: 'otp', state: 'factor:email_otp' });
    const code = await codes.issue({ flowId: flow.id, accountId: account.id, purpose: 'login', codeHmac: 'c', expiresAt: new Date(Date.now() + 600_000) });
    const input = {
      flowId: flow.id,
      from: 'factor:email_otp',
      completedFactors: ['email_otp'],
      accountId: account.id,
      locale: null,
      consumeCodeId: code.id,
      event: { tenantId: 't1', submittedUserId: userId, clientId: 'c1', method: 'otp', sourceIp: null, userAgent: null },
    };
    expect(await codes.consume(code.id)).toBe(true);
    expect(await flows.complete(input)).toBeNull();
    expect((await db.prisma.loginFlow.findUniqueOrThrow({ where: { id: flow.id } })).state).toBe('factor:email_otp');

    const fresh = await codes.issue({ flowId: flow.id, accountId: account.id, purpose: 'login', codeHmac: 'd', expiresAt: new Date(Date.now() + 600_000) });
    expect(await flows.complete({ ...input, consumeCodeId: fresh.id })).toMatchObject({ succeeded: false, account: null });
    const after = await db.prisma.account.findUniqueOrThrow({ where: { id: account.id } });
    expect(after.failedAttempts).toBe(3);
    expect(after.lastLoginAt).toBeNull();
    expect((await db.prisma.loginEvent.findMany({ where: { accountId: account.id } })).map((e) => e.result)).toEqual(['locked']);
  });
});

describe('LoginHandoff', () => {
  const account = { id: 'a1' } as Parameters<LoginHandoff['put']>[0];

  it('serves an account twice (resume, code exchange), then reads go to the database again', () => {
    const h = new LoginHandoff();
    h.put(account);
    expect(h.take('a1')).toBe(account);
    expect(h.take('a1')).toBe(account);
    expect(h.take('a1')).toBeUndefined();
  });

  it('forgets an account whose access ended', () => {
    const h = new LoginHandoff();
    h.put(account);
    h.forget('a1');
    expect(h.take('a1')).toBeUndefined();
  });

  it('keeps an account 30 s at most', () => {
    jest.useFakeTimers({ now: Date.now() });
    try {
      const h = new LoginHandoff();
      h.put(account);
      jest.advanceTimersByTime(30_001);
      expect(h.take('a1')).toBeUndefined();
    } finally {
      jest.useRealTimers();
    }
  });
});
