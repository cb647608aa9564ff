// A login code's mail is stored in the outbox by the statement that stores the code, so the code page
// is never shown for a mail that is not queued yet: a provider that dies right after answering (kill
// -9, out of memory) cannot have promised a mail it had not stored. Shown with the outbox table
// locked: the user-ID step waits for it, instead of answering and queueing the mail afterwards.
import pg from 'pg';
import * as oidc from 'openid-client';
import { hashSecret, normalizeAnswer } from '../../src/credentials/hashing.js';
import { discover, startLogin, submit, type StartedLogin } from '../support/browser-less.js';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { waitUntil } from './mail-store.js';

describe('the code mail is queued before the code page is shown (outbox on PostgreSQL)', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  let locker: pg.Client;

  beforeAll(async () => {
    s = await startTestServer();
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    locker = new pg.Client({ connectionString: s.config.databaseUrl });
    await locker.connect();
  });
  afterAll(async () => {
    await locker?.end();
    await s?.close();
  });

  /** Statements waiting for the outbox's lock (pg_stat_activity's text of a prepared statement can be stale: not used). */
  async function waitingForOutbox(): Promise<number> {
    const { rows } = await locker.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'mail_outbox' AND NOT l.granted`,
    );
    return rows[0]!.n;
  }

  /** Codes stored (committed) for logins with this user ID. */
  async function codesOf(userId: string): Promise<number> {
    const { rows } = await locker.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM one_time_passwords o JOIN login_flows f ON f.id = o.flow_id WHERE f.submitted_user_id = $1',
      [userId],
    );
    return rows[0]!.n;
  }

  /**
   * Sends a user-ID step while the outbox takes no rows and tells what happened first: the answer, or
   * a statement of the provider waiting to insert the mail, with the code (not visible yet) or after
   * it (already stored: the code page could be shown). Then lets the outbox go and returns the answer.
   */
  async function withOutboxLocked(userId: string, send: () => Promise<Response>): Promise<{ first: string; res: Response }> {
    // SHARE blocks inserts (ROW EXCLUSIVE), not reads.
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE mail_outbox IN SHARE MODE');
    let answered = false;
    const submitted = send().then((res) => {
      answered = true;
      return res;
    });
    try {
      const first = await waitUntil(async () => {
        if (answered) return 'answered before the mail was stored';
        if ((await waitingForOutbox()) === 0) return undefined;
        return (await codesOf(userId)) === 0 ? 'the code and its mail wait together' : 'the code was stored before its mail';
      }, 'the user-ID step to answer or wait for the outbox');
      await locker.query('COMMIT');
      return { first, res: await submitted };
    } catch (err) {
      await locker.query('ROLLBACK');
      throw err;
    }
  }

  test('while the outbox takes no rows the user-ID step does not answer; then the code page and the mail come', async () => {
    const u = uniqueUser('queued');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    const login = await startLogin(rp, s.issuer);
    const before = s.smtp.messages.length;

    const { first, res } = await withOutboxLocked(u.userId, () => submit(login, 'identify', { userId: u.userId }));
    expect(first).toBe('the code and its mail wait together');
    expect(res.status).toBe(303);
    const otp = await s.smtp.otpFor(u.email, before);
    expect(otp).toMatch(/^\d{8}$/);
  });

  test("recovery's code: its user-ID step does not answer either until the mail is stored with the code", async () => {
    const u = uniqueUser('queuedrcv');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    await s.app.services.accounts.setSecretQuestion(account.id, 'first_pet', await hashSecret(normalizeAnswer('ポチ')));
    const login: StartedLogin = await startLogin(rp, s.issuer);
    const entry = await login.agent.get(`${login.interactionPath}/recovery`);
    expect(entry.status).toBe(303);
    expect((await login.agent.get(entry.headers.get('location')!)).status).toBe(200);
    const before = s.smtp.messages.length;

    const { first, res } = await withOutboxLocked(u.userId, () =>
      login.agent.post(`${login.interactionPath}/recovery/identify`, { _csrf: login.agent.cookies.get('csrf')!, userId: u.userId }),
    );
    expect(first).toBe('the code and its mail wait together');
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toMatch(/\/recovery\/code$/);
    const otp = await s.smtp.otpFor(u.email, before);
    expect(otp).toMatch(/^\d{8}$/);
  });
});
