// oidc-provider's error pages: our view, in the user's language, with the OAuth error code and a
// translated hint for the site's developer; the library's English description only inside the
// developer block, quoted.
import { parseTenants } from '../../src/config/tenants.js';
import { translator, type Locale } from '../../src/i18n/index.js';
import { describeOidcError } from '../../src/oidc/error-hints.js';
import { OIDC_SCOPES } from '../../src/oidc/provider.js';
import { POST_LOGOUT_URI, REDIRECT_URI, TEST_TENANTS_YAML, startTestServer, type TestServer } from '../support/harness.js';
import { Agent } from '../support/browser-less.js';

// A client with several redirect_uris: a request that leaves redirect_uri out cannot be sent back to
// the site, so every mistake in it is shown on our page (as a real integrator would meet it).
const MULTI_URI = 'http://127.0.0.1/cb2';
const MULTI = `      - { client_id: rp-multi, client_secret: rp-multi-secret-0123456789, name: 複数URIサイト, redirect_uris: ['${REDIRECT_URI}', '${MULTI_URI}'] }\n`;
const R = encodeURIComponent(REDIRECT_URI);
const EVIL_URI = 'https://evil.example/cb';

interface Mistake {
  name: string;
  path: string;
  /** Sent as a form POST when present. */
  body?: Record<string, string>;
  error: string;
  /** oidc-provider's English description, which must not show outside the developer block. */
  description: string;
  message: 'oidc:messages.request' | 'oidc:messages.logout' | 'common:errors.session_expired' | 'common:errors.csrf';
  hint: string;
  hintParams?: Record<string, string>;
  /** A piece of the hint that must read the same in both languages (a setting or value). */
  mentions: string;
  /** How the user chose English: the RP's ui_locales, or our ?lang= switch. */
  english: 'ui_locales' | 'lang';
}

const MISTAKES: Mistake[] = [
  {
    name: 'unknown client_id',
    path: `/auth?client_id=no-such-site&response_type=code&scope=openid&redirect_uri=${R}`,
    error: 'invalid_client',
    description: 'client is invalid',
    message: 'oidc:messages.request',
    hint: 'oidc:hints.client_unknown',
    hintParams: { clientId: 'no-such-site' },
    mentions: 'config/tenants.yaml',
    english: 'ui_locales',
  },
  {
    name: 'missing client_id',
    path: `/auth?response_type=code&scope=openid&redirect_uri=${R}`,
    error: 'invalid_request',
    description: "missing required parameter 'client_id'",
    message: 'oidc:messages.request',
    hint: 'oidc:hints.client_id_missing',
    mentions: 'client_id',
    english: 'ui_locales',
  },
  {
    name: 'unregistered redirect_uri',
    path: `/auth?client_id=rp-basic&response_type=code&scope=openid&redirect_uri=${encodeURIComponent(EVIL_URI)}`,
    error: 'invalid_redirect_uri',
    description: "redirect_uri did not match any of the client's registered redirect_uris",
    message: 'oidc:messages.request',
    hint: 'oidc:hints.redirect_uri_unregistered',
    hintParams: { redirectUri: EVIL_URI, clientId: 'rp-basic' },
    mentions: 'redirect_uris',
    english: 'ui_locales',
  },
  {
    name: 'missing redirect_uri with several registered',
    path: '/auth?client_id=rp-multi&response_type=code&scope=openid',
    error: 'invalid_request',
    description: "missing required parameter 'redirect_uri'",
    message: 'oidc:messages.request',
    hint: 'oidc:hints.redirect_uri_missing',
    hintParams: { clientId: 'rp-multi' },
    mentions: 'redirect_uris',
    english: 'ui_locales',
  },
  {
    name: 'missing response_type',
    path: '/auth?client_id=rp-multi&scope=openid',
    error: 'invalid_request',
    description: "missing required parameter 'response_type'",
    message: 'oidc:messages.request',
    hint: 'oidc:hints.response_type_missing',
    mentions: 'response_type=code',
    english: 'ui_locales',
  },
  {
    name: 'unsupported response_type',
    path: '/auth?client_id=rp-multi&scope=openid&response_type=token',
    error: 'unsupported_response_type',
    description: 'unsupported response_type requested',
    message: 'oidc:messages.request',
    hint: 'oidc:hints.response_type_unsupported',
    mentions: 'response_type=code',
    english: 'ui_locales',
  },
  {
    name: 'a parameter sent twice',
    path: `/auth?client_id=rp-basic&client_id=rp-basic&response_type=code&scope=openid&redirect_uri=${R}`,
    error: 'invalid_request',
    description: "'client_id' parameter must not be provided twice",
    message: 'oidc:messages.request',
    hint: 'oidc:hints.duplicate',
    hintParams: { params: 'client_id' },
    mentions: 'client_id',
    english: 'ui_locales',
  },
  {
    name: 'unregistered post_logout_redirect_uri',
    path: `/session/end?client_id=rp-basic&post_logout_redirect_uri=${encodeURIComponent(EVIL_URI)}`,
    error: 'invalid_request',
    description: 'post_logout_redirect_uri not registered',
    message: 'oidc:messages.logout',
    hint: 'oidc:hints.post_logout_unregistered',
    hintParams: { uri: EVIL_URI, clientId: 'rp-basic' },
    mentions: 'post_logout_redirect_uris',
    english: 'ui_locales',
  },
  {
    name: 'unknown client_id at logout',
    path: `/session/end?client_id=no-such-site&post_logout_redirect_uri=${encodeURIComponent(POST_LOGOUT_URI)}`,
    error: 'invalid_client',
    description: 'client is invalid',
    message: 'oidc:messages.logout',
    hint: 'oidc:hints.client_unknown',
    hintParams: { clientId: 'no-such-site' },
    mentions: 'config/tenants.yaml',
    english: 'ui_locales',
  },
  {
    name: 'a logout confirmation without its session',
    path: '/session/end/confirm',
    body: { xsrf: 'forged', logout: 'yes' },
    error: 'invalid_request',
    description: 'could not find logout details',
    message: 'common:errors.csrf',
    hint: 'oidc:hints.xsrf',
    mentions: 'logout',
    english: 'lang',
  },
  {
    name: 'an id_token_hint that is no ID token',
    path: `/session/end?id_token_hint=not-a-token&post_logout_redirect_uri=${encodeURIComponent(POST_LOGOUT_URI)}`,
    error: 'invalid_request',
    description: 'could not decode id_token_hint',
    message: 'oidc:messages.logout',
    hint: 'oidc:hints.id_token_hint',
    mentions: 'id_token_hint',
    english: 'ui_locales',
  },
  {
    name: 'a login resumed without its interaction cookie',
    path: '/auth/no-such-interaction',
    error: 'invalid_request',
    description: 'authorization request has expired',
    message: 'common:errors.session_expired',
    hint: 'oidc:hints.session_not_found',
    mentions: 'issuer',
    english: 'lang',
  },
];

/** The page's text with pug's entity escapes undone, for comparing with translated strings. */
function unescapeHtml(html: string): string {
  return html.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

function developerBlock(html: string): string {
  return /<details[^>]*>([\s\S]*?)<\/details>/.exec(html)?.[1] ?? '';
}

describe('oidc-provider error pages', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ tenants: parseTenants('t', TEST_TENANTS_YAML.replace('  - id: t2\n', `${MULTI}  - id: t2\n`)) });
  });
  afterAll(() => s?.close());

  async function page(path: string, locale: Locale, english: Mistake['english'], body?: Record<string, string>) {
    const sep = path.includes('?') ? '&' : '?';
    const url = locale === 'en' ? `${path}${sep}${english}=en` : path;
    const headers = { 'accept-language': locale === 'en' ? 'ja' : 'ja,en;q=0.5' };
    const agent = new Agent(s.issuer);
    const res = body ? await agent.post(url, body, headers) : await agent.get(url, headers);
    return { res, html: await res.text() };
  }

  describe.each(MISTAKES)('$name', (m) => {
    test.each(['ja', 'en'] as const)('%s: our page with the error code, the message and a translated hint', async (locale) => {
      const { res, html } = await page(m.path, locale, m.english, m.body);
      expect(res.status).toBe(400);
      expect(res.headers.get('content-type')).toMatch(/text\/html/);
      expect(html).toContain(`<html lang="${locale}">`);
      const t = translator(locale);
      const text = unescapeHtml(html);
      expect(html).toMatch(new RegExp(`<code class="error-code">${m.error}</code>`));
      expect(text).toContain(t(m.message));
      const hint = t(m.hint, m.hintParams ?? {});
      expect(hint).not.toBe(m.hint);
      const details = unescapeHtml(developerBlock(html));
      expect(details).toContain(hint);
      expect(details).toContain(m.mentions);
      for (const value of Object.values(m.hintParams ?? {})) expect(details).toContain(value);
      // The library's English sentence only in the developer block, quoted as the original.
      expect(details).toContain(`<q class="original">${m.description}</q>`);
      expect(unescapeHtml(html.replace(/<details[\s\S]*?<\/details>/, ''))).not.toContain(m.description);
    });
  });

  test('the Japanese page carries no English outside the developer block but the code and the service chrome', async () => {
    const { html } = await page(MISTAKES[2]!.path, 'ja', 'ui_locales');
    // The reference number (the request id, random letters) is not a text of the page.
    expect(html).toMatch(/<p class="request-id">[\s\S]*?<code>[A-Za-z0-9._-]+<\/code>/);
    const outside = html
      .replace(/<details[\s\S]*?<\/details>/, '')
      .replace(/<p class="request-id">[\s\S]*?<\/p>/, '')
      .replace(/<[^>]+>/g, ' ');
    const words = outside.match(/[A-Za-z_]{3,}/g) ?? [];
    expect(words.filter((w) => !['English', 'Web', 'invalid_redirect_uri'].includes(w))).toEqual([]);
  });

  // With a registered redirect_uri, these mistakes go back to the site as ?error=…&error_description=…
  // (RFC 6749 4.1.2.1), so the site's own page shows them; the same error, should it reach our page,
  // reads as this hint.
  test.each([
    ['a public client without PKCE', `/auth?client_id=rp-public&response_type=code&scope=openid&redirect_uri=${R}`, 'invalid_request', 'oidc:hints.pkce_required', 'code_challenge_method=S256'],
    ['an invalid scope', `/auth?client_id=rp-basic&response_type=code&scope=openid%20management&redirect_uri=${R}`, 'invalid_scope', 'oidc:hints.scope_invalid', OIDC_SCOPES.join(' ')],
    ['a bad prompt', `/auth?client_id=rp-basic&response_type=code&scope=openid&prompt=sometimes&redirect_uri=${R}`, 'invalid_request', 'oidc:hints.prompt_unsupported', 'consent'],
    ['no openid scope', `/auth?client_id=rp-basic&response_type=code&scope=profile&redirect_uri=${R}`, 'invalid_request', 'oidc:hints.scope_openid', 'openid'],
    ['prompt=none without a session', `/auth?client_id=rp-basic&response_type=code&scope=openid&prompt=none&redirect_uri=${R}`, 'login_required', 'oidc:hints.prompt_none', 'prompt=none'],
  ])('%s is sent back to the site; on our page it would read as its own hint', async (_name, path, error, hintKey, mentions) => {
    const res = await new Agent(s.issuer).get(path);
    const back = new URL(res.headers.get('location') ?? '', s.issuer);
    expect(back.origin + back.pathname).toBe(REDIRECT_URI);
    const out = { error: back.searchParams.get('error') ?? '', error_description: back.searchParams.get('error_description') ?? undefined, scope: back.searchParams.get('scope') ?? undefined };
    const view = describeOidcError(out, { clientId: 'rp-public' }, { scopes: OIDC_SCOPES });
    expect(view).toMatchObject({ error, hintKey });
    for (const locale of ['ja', 'en'] as const) {
      const hint = translator(locale)(view.hintKey, view.hintParams);
      expect(hint).not.toBe(hintKey);
      expect(hint).toContain(mentions);
    }
  });

  test('an error no rule knows gets the generic hint and keeps the original description', () => {
    const view = describeOidcError({ error: 'slow_down', error_description: 'try <later>' }, {}, { scopes: OIDC_SCOPES });
    expect(view).toMatchObject({ hintKey: 'oidc:hints.generic', hintParams: { error: 'slow_down' }, original: 'try <later>' });
  });

  test.each([
    ['redirect_uri and state', `/auth?client_id=rp-basic&response_type=code&scope=openid&state=%3Cscript%3Ealert(2)%3C%2Fscript%3E&redirect_uri=${encodeURIComponent('https://x.example/"><script>alert(1)</script>')}`, '"><script>alert(1)</script>'],
    ['client_id', `/auth?client_id=${encodeURIComponent('<img src=x onerror=alert(1)>')}&response_type=code&scope=openid&redirect_uri=${R}`, '<img src=x onerror=alert(1)>'],
    ['post_logout_redirect_uri', `/session/end?client_id=rp-basic&post_logout_redirect_uri=${encodeURIComponent('https://x.example/<script>alert(1)</script>')}`, '<script>alert(1)</script>'],
  ])('markup sent in %s is shown escaped, never as markup', async (_name, path, payload) => {
    const { res, html } = await page(path, 'ja', 'ui_locales');
    expect(res.status).toBe(400);
    expect(html).not.toContain(payload);
    expect(html).not.toMatch(/<script>alert|<img src=x/);
    // The value is quoted back to the developer, escaped.
    expect(unescapeHtml(developerBlock(html))).toContain(payload);
  });
});
