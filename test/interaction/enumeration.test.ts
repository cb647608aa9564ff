import { Writable } from 'node:stream';
import * as oidc from 'openid-client';
import { pino } from 'pino';
import { parseTenants } from '../../src/config/tenants.js';
import { hashSecret } from '../../src/credentials/hashing.js';
import type { MailJob, MailQueue } from '../../src/mail/mail.types.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { discover, startLogin, submit, type StartedLogin } from '../support/browser-less.js';

// t1 offers one login method (otp); t2 several, so unknown IDs need a decoy method there.
const TENANTS_YAML = TEST_TENANTS_YAML.replace('name: テナント2\n', 'name: テナント2\n    contract: { login_methods: [otp, password, password_otp] }\n');
const NOT_ACTIVATED = '初回認証が済んでいません';
const PASSWORD = 'Yuki-no-shita 73 tsubaki';

type Kind = 'unknown' | 'pending' | 'locked' | 'live';

/** The page as anyone without the mailbox sees it: per-login and per-ID values masked. */
function masked(html: string, login: StartedLogin, userId: string): string {
  return html.replaceAll(login.uid, 'UID').replaceAll(userId, 'USER').replace(/name="_csrf" value="[^"]+"/g, 'name="_csrf" value="CSRF"');
}

/** Which login method's page this is (password_otp starts with the password page). */
const pageKind = (html: string) => (html.includes('type="password"') ? 'password' : html.includes('name="otp"') ? 'otp' : 'other');

describe('who can tell whether a user ID exists (default: nobody without the mailbox)', () => {
  let s: TestServer;
  let t1: oidc.Configuration;
  let t2: oidc.Configuration;

  beforeAll(async () => {
    s = await startTestServer({ tenants: parseTenants('enumeration test tenants', TENANTS_YAML) });
    t1 = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    t2 = await discover(s.issuer, 'rp-t2', 'rp-t2-secret-01234567890');
  });
  afterAll(async () => {
    await s?.close();
  });

  async function account(kind: Kind, tenantId = 't1', loginMethod?: string) {
    const u = uniqueUser(kind);
    if (kind === 'unknown') return u;
    const a = await s.app.services.accounts.create({ tenantId, userId: u.userId, loginMethod, status: kind === 'pending' ? 'pending_activation' : 'active', devices: [{ email: u.email }] });
    if (loginMethod?.startsWith('password')) await s.app.services.accounts.setPassword(a.id, await hashSecret(PASSWORD));
    if (kind === 'locked') await s.db.prisma.account.update({ where: { id: a.id }, data: { lockedAt: new Date() } });
    return u;
  }

  /** The user-ID step as an observer sees it: status, redirect target and the page it leads to. */
  async function userIdStep(config: oidc.Configuration, userId: string) {
    const login = await startLogin(config, s.issuer);
    const res = await submit(login, 'identify', { userId });
    const location = res.headers.get('location');
    const body = masked(await res.text(), login, userId);
    const page = location ? masked(await (await login.agent.get(location)).text(), login, userId) : '';
    return { login, seen: { status: res.status, location: location?.replace(login.uid, 'UID') ?? null, body, page } };
  }

  test('one method: unknown, pending, locked and live IDs get the same answer and the same page', async () => {
    const seen: Record<string, unknown> = {};
    for (const kind of ['live', 'unknown', 'pending', 'locked'] as const) seen[kind] = (await userIdStep(t1, (await account(kind)).userId)).seen;
    expect(seen.live).toMatchObject({ status: 303, location: '/interaction/UID' });
    expect((seen.live as { page: string }).page).toContain('name="otp"');
    expect(seen.unknown).toEqual(seen.live);
    expect(seen.pending).toEqual(seen.live);
    expect(seen.locked).toEqual(seen.live);
  });

  test('several methods: an unknown ID always gets the same method page, and unknown IDs spread over the methods', async () => {
    const kinds = new Map<string, string>();
    for (let i = 0; i < 24; i++) {
      const u = uniqueUser('ghost');
      const { seen } = await userIdStep(t2, u.userId);
      expect(seen.status).toBe(303);
      kinds.set(u.userId, pageKind(seen.page));
    }
    expect(new Set(kinds.values())).toEqual(new Set(['otp', 'password']));
    // The same ID again, in new logins: the same page each time.
    for (const [userId, kind] of [...kinds].slice(0, 6)) expect(pageKind((await userIdStep(t2, userId)).seen.page)).toBe(kind);
  });

  test('several methods: a pending account walks its method like anyone, and hears of activation only at the submit', async () => {
    const u = await account('pending', 't2', 'password');
    const { login, seen } = await userIdStep(t2, u.userId);
    expect(seen.status).toBe(303);
    expect(pageKind(seen.page)).toBe('password');
    expect(seen.page).not.toContain(NOT_ACTIVATED);
    const res = await submit(login, 'password', { password: PASSWORD });
    expect(res.status).toBe(403);
    expect(await res.text()).toContain(NOT_ACTIVATED);
  });

  test('a pending account gets the not-activated page only after submitting a code, and no code mail', async () => {
    const pending = await account('pending');
    const live = await account('live');
    const before = s.smtp.messages.length;
    const { login, seen } = await userIdStep(t1, pending.userId);
    expect(seen.status).toBe(303);
    expect(seen.page).toContain('name="otp"');
    const res = await submit(login, 'otp', { otp: '12345678' });
    expect(res.status).toBe(403);
    const html = await res.text();
    expect(html).toContain(NOT_ACTIVATED);
    expect(html).not.toContain('/activation/');
    const events = await s.db.prisma.loginEvent.findMany({ where: { submittedUserId: pending.userId } });
    expect(events.map((e) => e.result)).toEqual(['not_activated']);
    // A live account's code mail, asked for afterwards, is the marker that the pending one got none.
    await userIdStep(t1, live.userId);
    await s.smtp.otpFor(live.email, before);
    expect(s.smtp.messages.slice(before).filter((m) => m.to.includes(pending.email))).toHaveLength(0);
  });

  test('recovery: unknown, pending and live IDs get the same code page; a pending account hears of activation after its code', async () => {
    const recoveryUrl = (l: StartedLogin, rest = '') => `${l.interactionPath}/recovery${rest}`;
    async function recoveryStep(userId: string) {
      const l = await startLogin(t1, s.issuer);
      await l.agent.get(recoveryUrl(l));
      const res = await l.agent.post(recoveryUrl(l, '/identify'), { _csrf: l.agent.cookies.get('csrf')!, userId });
      const location = res.headers.get('location');
      const page = location ? masked(await (await l.agent.get(location)).text(), l, userId) : '';
      return { l, seen: { status: res.status, location: location?.replace(l.uid, 'UID') ?? null, page } };
    }
    const live = await recoveryStep((await account('live')).userId);
    expect(live.seen).toMatchObject({ status: 303, location: '/interaction/UID/recovery/code' });
    expect((await recoveryStep((await account('unknown')).userId)).seen).toEqual(live.seen);
    const pending = await recoveryStep((await account('pending')).userId);
    expect(pending.seen).toEqual(live.seen);
    const res = await pending.l.agent.post(recoveryUrl(pending.l, '/code'), { _csrf: pending.l.agent.cookies.get('csrf')!, otp: '12345678' });
    expect(res.status).toBe(403);
    expect(await res.text()).toContain(NOT_ACTIVATED);
  });
});

describe('the user-ID step does not wait for the code mail', () => {
  /** A mail queue that holds every job until released (or fails them all), like a slow or broken queue. */
  function heldQueue(fail = false) {
    const jobs: MailJob[] = [];
    const arrivals: Array<() => void> = [];
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const queue: MailQueue = {
      async enqueue(job) {
        jobs.push(job);
        for (const a of arrivals.splice(0)) a();
        await released;
        if (fail) throw new Error('queue unavailable');
      },
      async close() {},
      async undelivered() {
        return [];
      },
    };
    const arrived = (match: (j: MailJob) => boolean) =>
      new Promise<MailJob>((resolve) => {
        const check = () => {
          const found = jobs.find(match);
          if (found) resolve(found);
          else arrivals.push(check);
        };
        check();
      });
    return { queue, release, arrived };
  }

  test('with a mail queue that blocks, the user-ID step still answers; the code is queued after it', async () => {
    const held = heldQueue();
    const s = await startTestServer({ mail: held.queue });
    try {
      const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
      const u = uniqueUser('held');
      await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
      const login = await startLogin(rp, s.issuer);
      const res = await submit(login, 'identify', { userId: u.userId });
      expect(res.status).toBe(303);
      const job = await held.arrived((j) => j.to.includes(u.email));
      expect(job.template).toBe('login-otp');
    } finally {
      held.release();
      await s.close();
    }
  }, 20_000);

  test('a queue failure after the answer is logged, not lost', async () => {
    const held = heldQueue(true);
    const lines: string[] = [];
    const logged: Array<() => void> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        for (const l of logged.splice(0)) l();
        done();
      },
    });
    const s = await startTestServer({ mail: held.queue, logger: pino({ level: 'info' }, sink) });
    try {
      const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
      const u = uniqueUser('fail');
      await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
      const login = await startLogin(rp, s.issuer);
      held.release();
      const res = await submit(login, 'identify', { userId: u.userId });
      expect(res.status).toBe(303);
      const line = await new Promise<string>((resolve) => {
        const check = () => {
          const found = lines.find((l) => l.includes('login-otp') && l.includes('queue unavailable'));
          if (found) resolve(found);
          else logged.push(check);
        };
        check();
      });
      expect(JSON.parse(line)).toMatchObject({ level: 50, template: 'login-otp' });
      expect(line).not.toMatch(/\b\d{8}\b/); // never the code
    } finally {
      await s.close();
    }
  });
});

describe('REVEAL_UNKNOWN_USER keeps the manual explicit pages', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  beforeAll(async () => {
    s = await startTestServer({ env: { REVEAL_UNKNOWN_USER: 'true' } });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    await s?.close();
  });

  test('unknown: ワンタイムパスワードが送信できませんでした; pending: 初回認証が済んでいません, both at the user-ID step', async () => {
    const unknown = await submit(await startLogin(rp, s.issuer), 'identify', { userId: uniqueUser('ghost').userId });
    expect(unknown.status).toBe(400);
    expect(await unknown.text()).toContain('ワンタイムパスワードが送信できませんでした');
    const u = uniqueUser('pend');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, status: 'pending_activation', devices: [{ email: u.email }] });
    const pending = await submit(await startLogin(rp, s.issuer), 'identify', { userId: u.userId });
    expect(pending.status).toBe(403);
    expect(await pending.text()).toContain(NOT_ACTIVATED);
    // Recovery's user-ID step likewise.
    const l = await startLogin(rp, s.issuer);
    await l.agent.get(`${l.interactionPath}/recovery`);
    const recovery = await l.agent.post(`${l.interactionPath}/recovery/identify`, { _csrf: l.agent.cookies.get('csrf')!, userId: u.userId });
    expect(recovery.status).toBe(403);
    expect(await recovery.text()).toContain(NOT_ACTIVATED);
  });
});
