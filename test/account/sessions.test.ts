import { createRemoteJWKSet, decodeJwt, jwtVerify, type JWTPayload } from 'jose';
import * as oidc from 'openid-client';
import { REDIRECT_URI, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { BACKCHANNEL_EVENT, startLogoutReceiver, tenantsWithBackchannel } from '../support/logout-receiver.js';
import { Agent, csrfOf, discover, followToCallback } from '../support/browser-less.js';
import { signInToArea } from '../support/account-area.js';

/** Rows of the sessions table: session uid, whether it is this browser's, and the row's text. */
function sessionRows(html: string) {
  return [...html.matchAll(/<tr( class="current-session")? data-session="([^"]+)">([\s\S]*?)<\/tr>/g)].map((m) => ({
    uid: m[2]!,
    current: !!m[1],
    text: m[3]!.replace(/<[^>]+>/g, ' '),
  }));
}

describe('account area: active sessions, sign out everywhere, back-channel logout', () => {
  let s: TestServer;
  let receiver: Awaited<ReturnType<typeof startLogoutReceiver>>;
  beforeAll(async () => {
    receiver = await startLogoutReceiver();
    s = await startTestServer({ tenants: tenantsWithBackchannel(receiver.uri) });
  });
  afterAll(async () => {
    await s?.close();
    await receiver?.close();
  });

  async function newUser() {
    const u = uniqueUser('sess');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    return { ...u, id: account.id };
  }

  /** A relying site's login in a browser that already has a provider session (no login screen): its tokens. */
  async function siteLogin(agent: Agent, clientId: string, secret: string) {
    const rp = await discover(s.issuer, clientId, secret);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(rp, { redirect_uri: REDIRECT_URI, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state });
    const callback = await followToCallback(agent, await agent.get(url.pathname + url.search));
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: verifier, expectedState: state });
    return { rp, tokens };
  }

  async function sessionsPage(agent: Agent, path = '/account/sessions') {
    const res = await agent.get(path);
    expect(res.status).toBe(200);
    return res.text();
  }

  test('the list shows every session of the account, when and how it signed in, its sites, and marks this browser', async () => {
    const u = await newUser();
    const a = new Agent(s.issuer);
    const b = new Agent(s.issuer);
    await signInToArea(s, a, u);
    await signInToArea(s, b, u);
    await siteLogin(a, 'rp-basic', 'rp-basic-secret-0123456789');

    const html = await sessionsPage(a);
    expect(html).toContain('<h1>ログイン中のセッション</h1>');
    expect(html).toMatch(/<a href="\/account\/sessions" aria-current="page">ログイン中のセッション<\/a>/);
    const rows = sessionRows(html);
    expect(rows).toHaveLength(2);
    const [mine, other] = rows;
    // This browser comes first and is marked; its sign-out is the menu's ログアウト, not a row button.
    expect(mine!.current).toBe(true);
    expect(mine!.text).toContain('このブラウザ');
    expect(mine!.text).toContain('アカウント管理');
    expect(mine!.text).toContain('利用サイトA');
    expect(mine!.text).toContain('ワンタイムパスワード');
    expect(mine!.text).toMatch(/\d{4}\/\d{2}\/\d{2} \d{2}:\d{2}:\d{2}/);
    expect(other!.current).toBe(false);
    expect(other!.text).toContain('アカウント管理');
    expect(other!.text).not.toContain('利用サイトA');
    expect(html).toContain(`action="/account/sessions/${other!.uid}/sign-out"`);
    expect(html).not.toContain(`action="/account/sessions/${mine!.uid}/sign-out"`);
    expect(html).toContain('すべての端末からログアウト');

    // The other browser sees the same two sessions, the other way round.
    const fromB = sessionRows(await sessionsPage(b));
    expect(fromB.find((r) => r.current)!.uid).toBe(other!.uid);

    // English.
    const en = await (await a.get('/account/sessions?lang=en')).text();
    for (const text of ['Active sessions', 'This browser', 'Sign out everywhere', 'One-time password']) expect(en).toContain(text);
  });

  test('signing out the other session ends it: that browser is asked to sign in again', async () => {
    const u = await newUser();
    const a = new Agent(s.issuer);
    const b = new Agent(s.issuer);
    await signInToArea(s, a, u);
    await signInToArea(s, b, u);
    const other = sessionRows(await sessionsPage(a)).find((r) => !r.current)!;

    const html = await sessionsPage(a);
    const out = await a.post(`/account/sessions/${other.uid}/sign-out`, { _csrf: csrfOf(html) });
    expect(out.status).toBe(303);
    expect(out.headers.get('location')).toBe('/account/sessions?signed_out=1');
    const after = await sessionsPage(a, out.headers.get('location')!);
    expect(after).toContain('セッションをログアウトしました。');
    expect(sessionRows(after).map((r) => r.uid)).not.toContain(other.uid);

    // B's area session went with its provider session: B must sign in again, from the site it came from,
    // and the provider asks for the user ID (its session is gone too).
    const back = await b.get('/account/');
    expect(back.status).toBe(303);
    expect(back.headers.get('location')).toBe('/account/login?return=%2Faccount%2F&client_id=rp-basic');
    let res = await b.get(back.headers.get('location')!);
    for (let i = 0; i < 5 && res.headers.get('location'); i++) {
      const next = new URL(res.headers.get('location')!, s.issuer);
      res = await b.get(next.pathname + next.search);
    }
    expect(await res.text()).toContain('name="userId"');

    const events = await s.app.services.accountEvents.list(u.id);
    expect(events.map((e) => e.type)).toContain('session_signed_out');

    // This browser's own session, or one that is not the account's, can't be signed out here.
    const mine = sessionRows(after).find((r) => r.current)!;
    expect((await a.post(`/account/sessions/${mine.uid}/sign-out`, { _csrf: csrfOf(after) })).status).toBe(400);
    expect((await a.post(`/account/sessions/${other.uid}/sign-out`, { _csrf: csrfOf(after) })).status).toBe(404);
    expect((await a.post('/account/sessions/not%20a%20uid/sign-out', { _csrf: csrfOf(after) })).status).toBe(404);
    expect((await a.get('/account/')).status).toBe(200);
  });

  test('sign out everywhere ends both browsers, revokes the sites’ refresh tokens and records the event', async () => {
    const u = await newUser();
    const a = new Agent(s.issuer);
    const b = new Agent(s.issuer);
    await signInToArea(s, a, u);
    await signInToArea(s, b, u);
    const { rp, tokens } = await siteLogin(b, 'rp-basic', 'rp-basic-secret-0123456789');
    expect(tokens.refresh_token).toBeTruthy();
    // The refresh token works before...
    const refreshed = await oidc.refreshTokenGrant(rp, tokens.refresh_token!);

    const html = await sessionsPage(a);
    const out = await a.post('/account/sessions/sign-out-everywhere', { _csrf: csrfOf(html) });
    expect(out.status).toBe(303);
    expect(out.headers.get('location')).toBe('/account/sessions/signed-out');
    const done = await a.get('/account/sessions/signed-out');
    expect(done.status).toBe(200);
    expect(await done.text()).toContain('すべての端末からログアウトしました');

    for (const agent of [a, b]) {
      const res = await agent.get('/account/');
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toMatch(/^\/account\/login\?/);
    }
    // ...and is refused after, as is the one it was rotated into.
    await expect(oidc.refreshTokenGrant(rp, refreshed.refresh_token ?? tokens.refresh_token!)).rejects.toThrow();
    await expect(oidc.refreshTokenGrant(rp, tokens.refresh_token!)).rejects.toThrow();

    const left = await s.db.prisma.$queryRaw<Array<{ n: bigint }>>`SELECT count(*) AS n FROM oidc_payloads WHERE payload->>'accountId' = ${u.id}`;
    expect(Number(left[0]!.n)).toBe(0);
    const event = (await s.app.services.accountEvents.list(u.id)).find((e) => e.type === 'signed_out_everywhere');
    expect(event).toMatchObject({ actor: 'user', detail: { sessions: 2 } });
    // The user is told by mail.
    const notice = await s.smtp.waitFor((m) => m.to.includes(u.email) && m.subject.includes('すべての端末からのログアウト'));
    expect(notice.text).toContain(u.userId);
  });

  test('both sign-outs refuse a POST without the CSRF token', async () => {
    const u = await newUser();
    const a = new Agent(s.issuer);
    const b = new Agent(s.issuer);
    await signInToArea(s, a, u);
    await signInToArea(s, b, u);
    const other = sessionRows(await sessionsPage(a)).find((r) => !r.current)!;
    expect((await a.post('/account/sessions/sign-out-everywhere', {})).status).toBe(403);
    expect((await a.post('/account/sessions/sign-out-everywhere', { _csrf: 'x'.repeat(43) })).status).toBe(403);
    expect((await a.post(`/account/sessions/${other.uid}/sign-out`, {})).status).toBe(403);
    // Nothing ended.
    expect(sessionRows(await sessionsPage(a))).toHaveLength(2);
    expect((await b.get('/account/')).status).toBe(200);
  });

  /** The logout token a site received, verified against the provider's published keys. */
  async function verifyLogoutToken(token: string): Promise<JWTPayload> {
    const meta = await (await fetch(`${s.issuer}/.well-known/openid-configuration`)).json() as { jwks_uri: string };
    const { payload, protectedHeader } = await jwtVerify(token, createRemoteJWKSet(new URL(meta.jwks_uri)), { issuer: s.issuer, audience: 'rp-bcl', typ: 'logout+jwt' });
    expect(protectedHeader.alg).toBe('RS256');
    expect(payload.events).toEqual({ [BACKCHANNEL_EVENT]: {} });
    expect(payload.jti).toBeTruthy();
    expect(payload.nonce).toBeUndefined();
    return payload;
  }

  test('a site with a back-channel logout URI hears of the logout from the account area and of sign out everywhere', async () => {
    const u = await newUser();
    const a = new Agent(s.issuer);

    // 1. ログアウト in the area (RP-initiated logout through the provider's confirmation).
    const top = await signInToArea(s, a, u);
    const first = await siteLogin(a, 'rp-bcl', 'rp-bcl-secret-0123456789');
    const firstSid = first.tokens.claims()!.sid;
    expect(firstSid).toBeTruthy(); // the site registered for back-channel logout gets sid in its ID tokens
    const before = receiver.tokens.length;
    const out = await a.post('/account/logout', { _csrf: csrfOf(await top.text()) });
    const end = new URL(out.headers.get('location')!, s.issuer);
    const confirm = await (await a.get(end.pathname + end.search)).text();
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(confirm)![1]!;
    const done = await a.post('/session/end/confirm', { xsrf, logout: 'yes' });
    expect(done.headers.get('location')).toBe(`${s.issuer}/account/logged-out`);
    const logout1 = await verifyLogoutToken(await receiver.nth(before + 1));
    expect(logout1).toMatchObject({ sub: u.id, sid: firstSid, aud: 'rp-bcl', iss: s.issuer });

    // 2. すべての端末からログアウト (sessions ended in storage, the site told by src/oidc/backchannel.ts).
    await signInToArea(s, a, u);
    const second = await siteLogin(a, 'rp-bcl', 'rp-bcl-secret-0123456789');
    const secondSid = second.tokens.claims()!.sid;
    expect(secondSid).not.toBe(firstSid);
    const html = await sessionsPage(a);
    expect(html).toContain('通知サイト');
    const count = receiver.tokens.length;
    await a.post('/account/sessions/sign-out-everywhere', { _csrf: csrfOf(html) });
    const logout2 = await verifyLogoutToken(await receiver.nth(count + 1));
    expect(logout2).toMatchObject({ sub: u.id, sid: secondSid, aud: 'rp-bcl', iss: s.issuer });
    // Exactly one token per ended sign-in: the account console has no back-channel URI. A later
    // sign-out's token is the marker that nothing else was on its way.
    await signInToArea(s, a, u);
    const third = await siteLogin(a, 'rp-bcl', 'rp-bcl-secret-0123456789');
    const thirdSid = third.tokens.claims()!.sid;
    await a.post('/account/sessions/sign-out-everywhere', { _csrf: csrfOf(await sessionsPage(a)) });
    await receiver.nth(count + 2);
    expect(receiver.tokens.slice(count).map((t) => decodeJwt(t).sid)).toEqual([secondSid, thirdSid]);
  });
});

describe('account area: sign-outs need a recent sign-in (ACCOUNT_REAUTH_AGE=0)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ env: { ACCOUNT_REAUTH_AGE: '0' } });
  });
  afterAll(async () => {
    await s?.close();
  });

  test('sign out everywhere first asks for the one-time password again, then returns to the sessions page', async () => {
    const u = uniqueUser('reauth');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    const agent = new Agent(s.issuer);
    await signInToArea(s, agent, u);
    // Viewing is not a change: no re-authentication.
    const page = await agent.get('/account/sessions');
    expect(page.status).toBe(200);
    const html = await page.text();

    const post = await agent.post('/account/sessions/sign-out-everywhere', { _csrf: csrfOf(html) });
    expect(post.status).toBe(303);
    expect(post.headers.get('location')).toBe('/account/reauth?return=%2Faccount%2Fsessions');
    const mails = s.smtp.messages.length;

    // The provider asks again even though its session is seconds old (max_age=0 with prompt=login).
    const reauth = await agent.get(post.headers.get('location')!);
    const authorize = new URL(reauth.headers.get('location')!);
    expect(authorize.searchParams.get('max_age')).toBe('0');
    expect(authorize.searchParams.get('prompt')).toBe('login');
    const interaction = await agent.get((await agent.get(authorize.pathname + authorize.search)).headers.get('location')!);
    expect(interaction.status).toBe(200);
    expect(await interaction.text()).toContain('name="userId"');

    const back = await signInToArea(s, agent, u, post.headers.get('location')!);
    expect(s.smtp.messages.length).toBeGreaterThan(mails); // a new code was mailed and entered
    expect(back.status).toBe(200);
    const returned = await back.text();
    expect(returned).toContain('<h1>ログイン中のセッション</h1>');
    // Nothing was signed out by the attempt, and this browser is still the one marked.
    const rows = [...returned.matchAll(/<tr( class="current-session")? data-session="([^"]+)">/g)];
    expect(rows).toHaveLength(1);
    expect(rows[0]![1]).toBeTruthy();
  });
});
