import type { Page } from 'playwright-core';
import { parseTenants } from '../../src/config/tenants.js';
import { TEST_TENANTS_YAML } from './harness.js';
import type { PasskeyService } from '../../src/passkey/passkey.service.js';
import type { Passkey } from '../../src/persistence/passkey.repository.js';

/** The browser library's global (served from our origin), as far as tests use it. */
type BrowserLibrary = { startRegistration(o: { optionsJSON: unknown }): Promise<unknown>; startAuthentication(o: { optionsJSON: unknown }): Promise<unknown> };

/** Puts the provider's copy of @simplewebauthn/browser into the page (once), opening a page of the provider first if needed. */
export async function withBrowserLibrary(page: Page, origin: string): Promise<void> {
  if (!page.url().startsWith(`${origin}/`)) await page.goto(`${origin}/health/live`);
  if (await page.evaluate(() => 'SimpleWebAuthnBrowser' in window)) return;
  await page.addScriptTag({ url: '/static/vendor/simplewebauthn-browser.js' });
}

/**
 * Registers a passkey for `account` the way the account area does, without its screens: the real
 * PasskeyService's options, `navigator.credentials.create` in the page (add a virtual authenticator to
 * it first: the credential is made there), and the real verification and storage.
 */
export async function registerPasskey(page: Page, passkeys: PasskeyService, account: { id: string; userId: string }, name = 'テスト用パスキー'): Promise<Passkey> {
  await withBrowserLibrary(page, passkeys.rp.origin);
  const binding = `test-registration-${account.id}-${Date.now()}`;
  const options = await passkeys.registrationOptions(account, binding);
  const response = await page.evaluate((optionsJSON) => (window as unknown as { SimpleWebAuthnBrowser: BrowserLibrary }).SimpleWebAuthnBrowser.startRegistration({ optionsJSON }), options);
  return passkeys.register(account, binding, response, { name, deviceId: null });
}

/**
 * An assertion made in the page for options the test chose (e.g. a page's challenge with its
 * allowCredentials dropped, so the authenticator answers with whatever passkey it holds), as JSON for
 * a form's `response` field: what a misbehaving or hostile browser could post.
 */
export async function assertWith(page: Page, origin: string, optionsJSON: unknown): Promise<string> {
  await withBrowserLibrary(page, origin);
  const answer = await page.evaluate((o) => (window as unknown as { SimpleWebAuthnBrowser: BrowserLibrary }).SimpleWebAuthnBrowser.startAuthentication({ optionsJSON: o }), optionsJSON);
  return JSON.stringify(answer);
}

/**
 * Makes the page's browser one without passkey autofill (conditional mediation), as older browsers
 * are: Chromium's virtual authenticator answers an autofill request at once, as if the user had picked
 * the passkey, which would sign in before a test could type a user ID or press a button.
 */
export async function withoutAutofill(page: Page): Promise<void> {
  await page.addInitScript(() => {
    if ('PublicKeyCredential' in window) Object.defineProperty(PublicKeyCredential, 'isConditionalMediationAvailable', { value: async () => false });
  });
}

/** The test tenants with passkeys: t1 offers the passkey methods (passkey recovery on, the default); t2 a passkey method with passkey recovery off. */
export const passkeyTenants = () =>
  parseTenants(
    't',
    TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, passkey, otp_passkey]').replace(
      'name: テナント2\n',
      'name: テナント2\n    contract: { login_methods: [otp, passkey], passkey_recovery: false }\n',
    ),
  );
