import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Page } from 'playwright-core';
import * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { discover } from '../support/browser-less.js';
import { describeBrowser, screenshot, useBrowserSuite } from '../support/browser.js';
import { assertWith, registerPasskey, withoutAutofill } from '../support/passkeys.js';
import { addVirtualAuthenticator } from '../support/virtual-authenticator.js';

const ACR = {
  otp: 'urn:anshin-login:acr:otp',
  passkey: 'urn:anshin-login:acr:passkey',
  otpPasskey: 'urn:anshin-login:acr:otp-passkey',
};

/** Two tenants whose contracts allow passkeys, so a passkey of one can be tried at the other. */
const tenantsYaml = (callback: string) => `
tenants:
  - id: t1
    name: テナント1
    contract: { login_methods: [otp, passkey, otp_passkey], lockout_threshold: 5 }
    clients:
      - { client_id: rp-basic, client_secret: rp-basic-secret-0123456789, name: 利用サイトA, redirect_uris: ['${callback}'] }
  - id: t2
    name: テナント2
    contract: { login_methods: [otp, passkey] }
    clients:
      - { client_id: rp-t2, client_secret: rp-t2-secret-01234567890, name: 別テナントのサイト, redirect_uris: ['${callback}'] }
  - id: t3
    name: テナント3
    contract: { login_methods: [passkey], lockout: { threshold: 2, duration_minutes: 15 } }
    clients:
      - { client_id: rp-t3, client_secret: rp-t3-secret-01234567890, name: 一時ロックのサイト, redirect_uris: ['${callback}'] }
`;
const SECRETS: Record<string, string> = { 'rp-basic': 'rp-basic-secret-0123456789', 'rp-t2': 'rp-t2-secret-01234567890', 'rp-t3': 'rp-t3-secret-01234567890' };

/** What each page must say, per language (literal, so a broken translation fails the test). */
const TEXTS = {
  ja: {
    browserLocale: 'ja-JP',
    send: '送信',
    otpSubmit: 'ログイン',
    signIn: 'パスキーでログイン',
    or: 'パスキーを登録済みの方は、ユーザIDを入力せずにログインできます。',
    title: 'パスキーによる認証',
    lead: 'このユーザIDに登録したパスキーで認証してください。',
    authenticate: 'パスキーで認証',
    notRegistered: 'このパスキーは、このユーザIDに登録されていません。',
    unknown: 'このパスキーは登録されていません。',
    cloned: 'このパスキーは複製された疑いがあるため使用できません。',
    locked: 'アカウントをロックしました',
    lockedFor15: 'あと約15分でロックが解除されます',
    challenge: 'パスキーの確認の有効期限が切れたか、すでに使用されています。もう一度お試しください。',
    menuHistory: 'ログイン履歴閲覧',
    methodPasskey: 'パスキー',
    success: 'ログイン成功',
  },
  en: {
    browserLocale: 'en-US',
    send: 'Send',
    otpSubmit: 'Log in',
    signIn: 'Sign in with a passkey',
    or: 'If you have registered a passkey, you can sign in without entering your user ID.',
    title: 'Passkey authentication',
    lead: 'Please authenticate with a passkey registered to this user ID.',
    authenticate: 'Authenticate with a passkey',
    notRegistered: 'This passkey is not registered to this user ID.',
    unknown: 'This passkey is not registered.',
    cloned: 'This passkey cannot be used because it may have been copied.',
    locked: 'Your account has been locked',
    lockedFor15: 'The lock lifts in about 15 minutes',
    challenge: 'The passkey check has expired or was already used. Please try again.',
    menuHistory: 'Login history',
    methodPasskey: 'Passkey',
    success: 'Login succeeded',
  },
} as const;
type Texts = (typeof TEXTS)[keyof typeof TEXTS];

describeBrowser('passkey login in Chromium (virtual authenticator)', () => {
  let s: TestServer;
  /** The relying site's redirect URI: a page of a tiny server, so the browser really lands there. */
  let callbackUrl: string;
  const suite = useBrowserSuite(
    async () => {
      const site = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<p id="rp-callback">callback</p>'));
      await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
      callbackUrl = `http://127.0.0.1:${(site.address() as AddressInfo).port}/cb`;
      // WebAuthn refuses an IP address as relying-party ID: the issuer is http://localhost:<port>.
      const server = await startTestServer({ tenants: parseTenants('passkey tenants', tenantsYaml(callbackUrl)), issuerHost: 'localhost' }).catch((e: unknown) => {
        site.close();
        throw e;
      });
      return {
        ...server,
        async close() {
          await server.close();
          site.closeAllConnections();
          await new Promise<void>((resolve) => site.close(() => resolve()));
        },
      };
    },
    (server) => {
      s = server;
    },
  );

  /** A page of a browser without passkey autofill (see withoutAutofill); `autofill`: with it. */
  async function openPage(locale: string, autofill = false): Promise<Page> {
    const page = await suite.openPage(locale);
    if (!autofill) await withoutAutofill(page);
    return page;
  }

  async function newAccount(loginMethod: string, tenantId = 't1') {
    const u = uniqueUser('pk');
    const account = await s.app.services.accounts.create({ tenantId, userId: u.userId, loginMethod, devices: [{ email: u.email }] });
    return { ...u, id: account.id };
  }

  /** A new account of `loginMethod` with one passkey, held by the virtual authenticator of a fresh page. */
  async function accountWithPasskey(loginMethod: string, locale: string, opts: { autofill?: boolean } = {}) {
    const u = await newAccount(loginMethod);
    const page = await openPage(locale, opts.autofill);
    const authenticator = await addVirtualAuthenticator(page);
    await registerPasskey(page, s.app.services.passkeyService, u);
    return { u, page, authenticator };
  }

  /** A relying site's authorization request, opened in the page; its callback answered in the browser. */
  async function authorize(page: Page, clientId = 'rp-basic', extra: Record<string, string> = {}) {
    const rp = await discover(s.issuer, clientId, SECRETS[clientId]);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const url = oidc.buildAuthorizationUrl(rp, {
      redirect_uri: callbackUrl,
      scope: 'openid',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
      ...extra,
    });
    await page.goto(url.href);
    return {
      /** Waits for the callback and exchanges its code: the ID token's claims. */
      async claims() {
        // This request's callback (by its state), not an earlier one still shown.
        await page.waitForURL((u) => u.href.startsWith(callbackUrl) && u.searchParams.get('state') === state);
        await page.locator('#rp-callback').waitFor();
        const tokens = await oidc.authorizationCodeGrant(rp, new URL(page.url()), { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
        return tokens.claims()!;
      },
    };
  }

  async function visible(page: Page) {
    return page.locator('body').innerText();
  }

  async function identify(page: Page, t: Texts, userId: string) {
    await page.locator('#userId').fill(userId);
    await page.getByRole('button', { name: t.send, exact: true }).click();
  }

  /**
   * At the passkey page for `userId`, the page's challenge answered with whatever passkey the page's
   * authenticator holds (the options' list dropped): another account's passkey, posted as a hostile
   * browser would.
   */
  async function answerWithOwnPasskey(page: Page, t: Texts, userId: string) {
    await identify(page, t, userId);
    await page.locator('#passkey-submit').waitFor();
    const options = JSON.parse((await page.locator('#passkey-options').textContent()) ?? '{}') as Record<string, unknown>;
    const forged = await assertWith(page, s.issuer, { ...options, allowCredentials: [] });
    await page.evaluate((value) => {
      const form = document.getElementById('passkey-form') as HTMLFormElement;
      (form.elements.namedItem('response') as HTMLInputElement).value = value;
      HTMLFormElement.prototype.submit.call(form);
    }, forged);
  }

  const eventsOf = async (accountId: string) =>
    (await s.db.prisma.loginEvent.findMany({ where: { accountId }, orderBy: { createdAt: 'asc' } })).map((e) => `${e.method}:${e.result}`);
  const failuresOf = async (accountId: string) => (await s.app.services.accounts.findById(accountId))!.failedAttempts;

  describe.each(['ja', 'en'] as const)('%s', (lang) => {
    const t = TEXTS[lang];
    const shot = (page: Page, n: string) => screenshot(page, `passkey-login-${lang}-${n}`);

    test('passwordless with the user ID: the passkey page, then the ID token says passkey (acr, amr hwk + user)', async () => {
      const { u, page } = await accountWithPasskey('passkey', t.browserLocale);

      const login = await authorize(page);
      await page.locator('#passkey-sign-in').waitFor();
      expect(await page.locator('#userId').getAttribute('autocomplete')).toBe('username webauthn');
      expect(await visible(page)).toContain(t.or);
      await shot(page, '01-identify');

      await identify(page, t, u.userId);
      await page.locator('#passkey-submit').waitFor();
      const text = await visible(page);
      for (const x of [t.title, t.lead, u.userId]) expect(text).toContain(x);
      // The options name this account's passkey, with a challenge bound to this login.
      const options = JSON.parse(await page.locator('#passkey-options').textContent() ?? '{}') as { allowCredentials: Array<{ id: string }>; userVerification: string };
      const stored = await s.app.services.passkeys.listForAccount(u.id);
      expect(options.allowCredentials.map((c) => c.id)).toEqual(stored.map((p) => p.credentialId));
      expect(options.userVerification).toBe('required');
      await shot(page, '02-passkey');

      await page.getByRole('button', { name: t.authenticate, exact: true }).click();
      expect(await login.claims()).toMatchObject({ acr: ACR.passkey, amr: ['hwk', 'user'] });
      expect(await eventsOf(u.id)).toEqual(['passkey:success']);
      expect((await s.app.services.passkeys.listForAccount(u.id))[0]!.lastUsedAt).not.toBeNull();
    });

    test('passwordless without a user ID (the button), then the login history says パスキー / Passkey', async () => {
      const { u, page } = await accountWithPasskey('passkey', t.browserLocale);

      // The account area signs in through the same login screens.
      await page.goto(`${s.issuer}/account/?client_id=rp-basic`);
      await page.getByRole('button', { name: t.signIn, exact: true }).click();
      await page.getByRole('link', { name: t.menuHistory, exact: true }).click();
      await page.waitForURL(`${s.issuer}/account/history`);
      const row = page.locator('#history tbody tr').first().locator('td');
      expect(await row.nth(2).innerText()).toBe(t.success);
      expect(await row.nth(4).innerText()).toBe(t.methodPasskey);
      await shot(page, '03-history');
      expect(await eventsOf(u.id)).toEqual(['passkey:success']);
    });

    test('otp_passkey: the mailed code, then the passkey; the ID token has both (otp, hwk, user)', async () => {
      const { u, page } = await accountWithPasskey('otp_passkey', t.browserLocale);

      const login = await authorize(page);
      const before = s.smtp.messages.length;
      await identify(page, t, u.userId);
      await page.locator('#otp').fill(await s.smtp.otpFor(u.email, before));
      await page.locator('form[action$="/otp"]').getByRole('button', { name: t.otpSubmit, exact: true }).click();
      await page.locator('#passkey-submit').waitFor();
      await shot(page, '04-otp-then-passkey');
      await page.locator('#passkey-submit').click();
      expect(await login.claims()).toMatchObject({ acr: ACR.otpPasskey, amr: ['otp', 'hwk', 'user'] });
      expect(await eventsOf(u.id)).toEqual(['otp_passkey:success']);
    });
  });

  test('passwordless without a user ID by autofill (conditional mediation): picking the passkey signs in', async () => {
    // A browser with passkey autofill; the virtual authenticator picks its one passkey as a user would.
    const { u, page } = await accountWithPasskey('passkey', 'ja-JP', { autofill: true });
    const login = await authorize(page);
    expect(await login.claims()).toMatchObject({ acr: ACR.passkey, amr: ['hwk', 'user'] });
    expect(await eventsOf(u.id)).toEqual(['passkey:success']);
  });

  test('otp_passkey without a user ID: the passkey first, then the mailed code', async () => {
    const t = TEXTS.ja;
    const { u, page } = await accountWithPasskey('otp_passkey', t.browserLocale);

    const login = await authorize(page);
    const before = s.smtp.messages.length;
    await page.getByRole('button', { name: t.signIn, exact: true }).click();
    await page.locator('#otp').fill(await s.smtp.otpFor(u.email, before));
    await page.locator('form[action$="/otp"]').getByRole('button', { name: t.otpSubmit, exact: true }).click();
    const claims = await login.claims();
    expect(claims).toMatchObject({ acr: ACR.otpPasskey, sub: expect.any(String) });
    // The passkey came first: its device-bound key is no longer at hand, so the ID token claims no hardware.
    expect(claims.amr).toEqual(['otp', 'swk', 'user']);
    expect(await eventsOf(u.id)).toEqual(['otp_passkey:success']);
  });

  test('step-up: a session signed in with the mailed code gets the passkey step when a client asks for the passkey acr', async () => {
    const t = TEXTS.ja;
    const { u, page } = await accountWithPasskey('otp', t.browserLocale);

    const first = await authorize(page);
    const before = s.smtp.messages.length;
    await identify(page, t, u.userId);
    await page.locator('#otp').fill(await s.smtp.otpFor(u.email, before));
    await page.locator('form[action$="/otp"]').getByRole('button', { name: t.otpSubmit, exact: true }).click();
    expect(await first.claims()).toMatchObject({ acr: ACR.otp, amr: ['otp'] });

    // The same browser (session), now asked for a passkey: straight to the passkey step, no user ID.
    const second = await authorize(page, 'rp-basic', { acr_values: ACR.passkey });
    await page.locator('#passkey-submit').waitFor();
    expect(await visible(page)).toContain(u.userId);
    await page.locator('#passkey-submit').click();
    expect(await second.claims()).toMatchObject({ acr: ACR.passkey, amr: ['hwk', 'user'] });

    // That session now satisfies the passkey acr without another step.
    const third = await authorize(page, 'rp-basic', { acr_values: ACR.passkey });
    expect(await third.claims()).toMatchObject({ acr: ACR.passkey });
    expect(await eventsOf(u.id)).toEqual(['otp:success', 'passkey:success']);
  });

  test('step-up: a session signed in with a passkey, asked for otp_passkey, gets only the mailed code', async () => {
    const t = TEXTS.ja;
    const { u, page } = await accountWithPasskey('passkey', t.browserLocale);
    const first = await authorize(page);
    await identify(page, t, u.userId);
    await page.locator('#passkey-submit').click();
    expect(await first.claims()).toMatchObject({ acr: ACR.passkey, amr: ['hwk', 'user'] });

    const before = s.smtp.messages.length;
    const second = await authorize(page, 'rp-basic', { acr_values: ACR.otpPasskey });
    await page.locator('#otp').fill(await s.smtp.otpFor(u.email, before));
    await page.locator('form[action$="/otp"]').getByRole('button', { name: t.otpSubmit, exact: true }).click();
    expect(await second.claims()).toMatchObject({ acr: ACR.otpPasskey, amr: ['otp', 'swk', 'user'] });
    expect(await eventsOf(u.id)).toEqual(['passkey:success', 'otp_passkey:success']);
  });

  describe.each(['ja', 'en'] as const)('%s refusals', (lang) => {
    const t = TEXTS[lang];
    const shot = (page: Page, n: string) => screenshot(page, `passkey-login-${lang}-${n}`);

    test("a cloned authenticator (the counter went back) is refused and counted; the original still works", async () => {
      const u = await newAccount('passkey');
      const page = await openPage(t.browserLocale);
      const original = await addVirtualAuthenticator(page);
      await registerPasskey(page, s.app.services.passkeyService, u);
      const login = await authorize(page);
      await identify(page, t, u.userId);
      await page.locator('#passkey-submit').click();
      await login.claims();
      const [credential] = await original.credentials();
      expect(credential!.signCount).toBeGreaterThan(0);

      // Another browser with a copy of the key, its counter behind the original's.
      const other = await openPage(t.browserLocale);
      const clone = await addVirtualAuthenticator(other);
      await clone.addCredential({ ...credential!, signCount: 0 });
      await authorize(other);
      await identify(other, t, u.userId);
      await other.locator('#passkey-submit').click();
      await other.getByText(t.cloned).waitFor();
      await shot(other, '05-cloned');
      expect(await failuresOf(u.id)).toBe(1);
      expect(await eventsOf(u.id)).toEqual(['passkey:success', 'passkey:cloned_passkey']);

      // The original authenticator, ahead of the stored counter, still signs in (and resets the count).
      const again = await authorize(page, 'rp-basic', { prompt: 'login' });
      await identify(page, t, u.userId);
      await page.locator('#passkey-submit').click();
      expect(await again.claims()).toMatchObject({ acr: ACR.passkey });
      expect(await failuresOf(u.id)).toBe(0);
    });

    test("another account's passkey, posted for this user ID, is refused and counted towards this account's lockout", async () => {
      const victim = await newAccount('passkey');
      const attacker = await newAccount('passkey');
      const victimsBrowser = await openPage(t.browserLocale);
      await addVirtualAuthenticator(victimsBrowser);
      await registerPasskey(victimsBrowser, s.app.services.passkeyService, victim);

      const page = await openPage(t.browserLocale);
      await addVirtualAuthenticator(page);
      await registerPasskey(page, s.app.services.passkeyService, attacker);
      await authorize(page);
      await answerWithOwnPasskey(page, t, victim.userId);
      await page.getByText(t.notRegistered).waitFor();
      await shot(page, '06-other-account');
      expect(await failuresOf(victim.id)).toBe(1);
      expect(await failuresOf(attacker.id)).toBe(0);
      expect(await eventsOf(victim.id)).toEqual(['passkey:wrong_passkey']);
    });

    test("another tenant's passkey signs nobody in here (without a user ID), and its account is untouched", async () => {
      const elsewhere = await newAccount('passkey', 't2');
      const page = await openPage(t.browserLocale);
      await addVirtualAuthenticator(page);
      await registerPasskey(page, s.app.services.passkeyService, elsewhere);
      await authorize(page, 'rp-basic');
      const uid = new URL(page.url()).pathname.split('/').pop()!;
      await page.getByRole('button', { name: t.signIn, exact: true }).click();
      await page.getByText(t.unknown).waitFor();
      await shot(page, '07-other-tenant');
      expect(await failuresOf(elsewhere.id)).toBe(0);
      expect(await eventsOf(elsewhere.id)).toEqual([]);
      const flow = await s.db.prisma.loginFlow.findUnique({ where: { interactionUid: uid } });
      expect(flow?.state ?? 'identify').toBe('identify');
      const refused = await s.db.prisma.loginEvent.findMany({ where: { tenantId: 't1', clientId: 'rp-basic', result: 'wrong_passkey', accountId: null } });
      expect(refused.length).toBeGreaterThan(0);
    });
  });

  test('a locked or pending account does not sign in without a user ID either; the history records it under passkey', async () => {
    const t = TEXTS.ja;
    for (const state of ['locked', 'pending'] as const) {
      const { u, page } = await accountWithPasskey('passkey', t.browserLocale);
      await s.db.prisma.account.update({ where: { id: u.id }, data: state === 'locked' ? { lockedAt: new Date() } : { status: 'pending_activation', activatedAt: null } });
      await authorize(page);
      const uid = new URL(page.url()).pathname.split('/').pop()!;
      await page.getByRole('button', { name: t.signIn, exact: true }).click();
      await page.getByText(state === 'locked' ? t.locked : '初回認証が済んでいません').waitFor();
      expect(await eventsOf(u.id)).toEqual([state === 'locked' ? 'passkey:locked' : 'passkey:not_activated']);
      // Back at the user-ID step: nothing of the account is shown.
      expect((await s.db.prisma.loginFlow.findUnique({ where: { interactionUid: uid } }))!.state).toBe('identify');
    }
  });

  test('an account without a passkey gets the same page with stand-in options, stable per user ID', async () => {
    const t = TEXTS.ja;
    const u = await newAccount('passkey');
    const optionsFor = async () => {
      const page = await openPage(t.browserLocale);
      await authorize(page);
      await identify(page, t, u.userId);
      await page.locator('#passkey-submit').waitFor();
      expect(await visible(page)).toContain(t.lead);
      return JSON.parse((await page.locator('#passkey-options').textContent()) ?? '{}') as { allowCredentials: Array<{ id: string }>; challenge: string };
    };
    const [first, second] = [await optionsFor(), await optionsFor()];
    expect(first.allowCredentials).toHaveLength(1);
    expect(second.allowCredentials).toEqual(first.allowCredentials);
    expect(second.challenge).not.toBe(first.challenge);
  });

  test('a spent challenge is a plain error asking to try again, not a counted failure', async () => {
    const t = TEXTS.ja;
    const { u, page } = await accountWithPasskey('passkey', t.browserLocale);
    await authorize(page);
    await identify(page, t, u.userId);
    await page.locator('#passkey-submit').waitFor();
    const options = JSON.parse((await page.locator('#passkey-options').textContent()) ?? '{}') as Record<string, unknown>;
    const answer = await assertWith(page, s.issuer, options);
    // The same answer twice: the second finds its challenge spent.
    const post = (value: string) =>
      page.evaluate(async (v) => {
        const form = document.getElementById('passkey-form') as HTMLFormElement;
        const body = new URLSearchParams({ _csrf: (form.elements.namedItem('_csrf') as HTMLInputElement).value, response: v });
        const res = await fetch(form.action, { method: 'POST', body, redirect: 'manual', credentials: 'same-origin' });
        return { status: res.status, text: res.type === 'opaqueredirect' ? '' : await res.text() };
      }, value);
    const first = await post(answer);
    const second = await post(answer);
    expect(first.status).toBe(0); // a redirect (back to the relying site)
    expect(second.status).toBe(400);
    expect(second.text).toContain(t.challenge);
    expect(await failuresOf(u.id)).toBe(0);
  });
  describe.each(['ja', 'en'] as const)('temporary lockout (%s)', (lang) => {
    const t = TEXTS[lang];
    test('failed passkey assertions lock the account for the contract\'s duration; the lock page says how long; once it lifts, the passkey signs in', async () => {
      const u = await newAccount('passkey', 't3');
      const ownersPage = await openPage(t.browserLocale);
      await addVirtualAuthenticator(ownersPage);
      await registerPasskey(ownersPage, s.app.services.passkeyService, u);
      const intruder = await newAccount('passkey', 't3');
      const page = await openPage(t.browserLocale);
      await addVirtualAuthenticator(page);
      await registerPasskey(page, s.app.services.passkeyService, intruder);

      // Threshold 2: the first wrong passkey is refused, the second locks.
      await authorize(page, 'rp-t3');
      await answerWithOwnPasskey(page, t, u.userId);
      await page.getByText(t.notRegistered).waitFor();
      await authorize(page, 'rp-t3');
      await answerWithOwnPasskey(page, t, u.userId);
      await page.getByText(t.lockedFor15).waitFor();
      await screenshot(page, `passkey-login-${lang}-08-temporary-lock`);
      const locked = (await s.app.services.accounts.findById(u.id))!;
      expect(locked.lockedUntil!.getTime() - locked.lockedAt!.getTime()).toBe(15 * 60_000);

      // While locked, even the owner's passkey is refused, with the time left.
      await authorize(ownersPage, 'rp-t3');
      await identify(ownersPage, t, u.userId);
      await ownersPage.locator('#passkey-submit').click();
      await ownersPage.locator('.error-box, .error').first().waitFor();
      expect(await visible(ownersPage)).toMatch(lang === 'ja' ? /あと約1[45]分でロックが解除されます/ : /The lock lifts in about 1[45] minutes/);
      expect(await eventsOf(u.id)).toEqual(['passkey:wrong_passkey', 'passkey:locked', 'passkey:locked']);

      // The lock's time passes (moved into the past rather than waited for): the passkey signs in.
      await s.db.sql.query(`UPDATE accounts SET locked_at = now() - interval '16 minutes', locked_until = now() - interval '1 minute' WHERE id = $1::uuid`, [u.id]);
      const login = await authorize(ownersPage, 'rp-t3');
      await identify(ownersPage, t, u.userId);
      await ownersPage.locator('#passkey-submit').click();
      expect(await login.claims()).toMatchObject({ acr: ACR.passkey, amr: ['hwk', 'user'] });
      expect(await failuresOf(u.id)).toBe(0);
    });
  });
});
