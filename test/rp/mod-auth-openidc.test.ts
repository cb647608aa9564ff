// Apache httpd with mod_auth_openidc (Debian's libapache2-mod-auth-openidc) protects a page that a
// login with the mailed code unlocks. Apart from what every site must set (provider, client, redirect
// URI, passphrase) and the scope that brings the user ID, the module keeps its defaults: the code flow
// without PKCE, client_secret_basic, its own cookies and state checks.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Browser, freePort, relyingPartyTenants, signInAtProvider, startChild, type ChildSite } from '../support/relying-party.js';

const APACHE = '/usr/sbin/apache2';
const MODULES = '/usr/lib/apache2/modules';
const missing = [
  ...(existsSync(APACHE) ? [] : ['apache2']),
  ...(existsSync(join(MODULES, 'mod_auth_openidc.so')) ? [] : ['libapache2-mod-auth-openidc']),
];
if (missing.length) console.warn(`mod_auth_openidc test skipped: install ${missing.join(' and ')} (apt-get install -y ${missing.join(' ')}; .ci/run does)`);

/** A self-contained server config: its own ServerRoot, pid file, logs and port; nothing from /etc/apache2. */
function apacheConfig(dir: string, port: number, issuer: string, client: { id: string; secret: string }): string {
  const root = process.getuid?.() === 0;
  return `
ServerRoot "${dir}"
ServerName 127.0.0.1
Listen 127.0.0.1:${port}
PidFile "${dir}/httpd.pid"
DefaultRuntimeDir "${dir}"
Mutex file:${dir} default
ErrorLog "${dir}/error.log"
LogLevel warn auth_openidc:info
${root ? '# Run as root, httpd serves as an unprivileged user (it refuses to serve as root).\nUser nobody\nGroup nogroup' : ''}
LoadModule mpm_event_module ${MODULES}/mod_mpm_event.so
LoadModule authn_core_module ${MODULES}/mod_authn_core.so
LoadModule authz_core_module ${MODULES}/mod_authz_core.so
LoadModule authz_user_module ${MODULES}/mod_authz_user.so
LoadModule headers_module ${MODULES}/mod_headers.so
LoadModule auth_openidc_module ${MODULES}/mod_auth_openidc.so
DocumentRoot "${dir}/htdocs"

OIDCProviderMetadataURL ${issuer}/.well-known/openid-configuration
OIDCClientID ${client.id}
OIDCClientSecret ${client.secret}
OIDCRedirectURI http://127.0.0.1:${port}/protected/redirect_uri
OIDCCryptoPassphrase ${randomBytes(24).toString('hex')}
# The default scope is "openid" alone; "profile" brings preferred_username (the user ID).
OIDCScope "openid profile"

<Location /protected>
  AuthType openid-connect
  Require valid-user
  # Shows the application what mod_auth_openidc passed it (claims as environment variables).
  Header always set X-OIDC-Sub "%{OIDC_CLAIM_sub}e"
  Header always set X-OIDC-User "%{OIDC_CLAIM_preferred_username}e"
</Location>
`;
}

(missing.length ? describe.skip : describe)('Apache with mod_auth_openidc signs in against the provider', () => {
  let s: TestServer;
  let httpd: ChildSite;
  let dir: string;
  let site: string;
  let account: { id: string };
  const user = uniqueUser('apache');

  beforeAll(async () => {
    const port = await freePort();
    site = `http://127.0.0.1:${port}`;
    const client = { id: 'apache-site', secret: 'apache-site-secret-0123456789' };
    s = await startTestServer({ tenants: relyingPartyTenants({ ...client, redirectUri: `${site}/protected/redirect_uri` }) });
    account = await s.app.services.accounts.create({ tenantId: 'rp', userId: user.userId, devices: [{ email: user.email }] });

    dir = mkdtempSync(join(tmpdir(), 'httpd-'));
    // Readable by the unprivileged user httpd serves as.
    chmodSync(dir, 0o755);
    mkdirSync(join(dir, 'htdocs', 'protected'), { recursive: true });
    writeFileSync(join(dir, 'htdocs', 'protected', 'page.html'), '<p>members only</p>\n');
    writeFileSync(join(dir, 'httpd.conf'), apacheConfig(dir, port, s.issuer, client));
    httpd = await startChild(APACHE, ['-f', join(dir, 'httpd.conf'), '-DFOREGROUND'], {
      ready: async () => {
        const res = await fetch(`${site}/`, { signal: AbortSignal.timeout(2_000) });
        await res.arrayBuffer();
        return true;
      },
    });
  });

  afterAll(async () => {
    await httpd?.close();
    await s?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Apache's error log, shown when an assertion fails. */
  const log = () => (existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8').slice(-3000) : '') + httpd.output();

  test('the protected page, the login with the mailed code (no PKCE), then the page with the user', async () => {
    const browser = new Browser();
    const loginPage = await browser.open(`${site}/protected/page.html`);
    expect({ at: loginPage.url.origin, log: loginPage.url.origin === s.issuer ? '' : `${loginPage.res.status} at ${loginPage.url.href}: ${await loginPage.res.text()} ${log()}` }).toEqual({ at: s.issuer, log: '' });
    const authorize = browser.visited.find((u) => u.origin === s.issuer && u.pathname === '/auth')!;
    expect(authorize.searchParams.get('code_challenge')).toBeNull();
    expect(authorize.searchParams.get('response_type')).toBe('code');

    const back = await signInAtProvider(browser, s, loginPage, user);
    const body = await back.res.text();
    expect({ url: back.url.href, status: back.res.status, body, log: back.res.status === 200 ? '' : log() }).toEqual({
      url: `${site}/protected/page.html`,
      status: 200,
      body: '<p>members only</p>\n',
      log: '',
    });
    expect(back.res.headers.get('x-oidc-sub')).toBe(account.id);
    expect(back.res.headers.get('x-oidc-user')).toBe(user.userId);

    // The module's session cookie now opens the page directly.
    const again = await browser.get(`${site}/protected/page.html`);
    expect(again.res.status).toBe(200);
  });
});
