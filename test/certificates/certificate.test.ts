import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import * as oidc from 'openid-client';
import { RSA_SIGNING, generateCertificateAuthority } from '../../src/certificates/certificate-authority.js';
import { loadX509 } from '../../src/certificates/x509.js';

const x509 = await loadX509();
import { parseTenants } from '../../src/config/tenants.js';
import { hashSecret } from '../../src/credentials/hashing.js';
import { clientCertificateReader } from '../../src/http/client-certificate.js';
import { createMtlsServer, listenMtls, loadMtlsCredentials } from '../../src/http/mtls-server.js';
import { METHOD_ACR } from '../../src/login/login-methods.js';
import { Agent, csrfOf, discover, followToCallback, startLogin, submit, type StartedLogin } from '../support/browser-less.js';
import { REDIRECT_URI, TEST_TENANTS_YAML, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { mtlsFetch, type ClientTls } from '../support/mtls-fetch.js';

const PASSWORD = 'kumo-no-ue-no-shiro-77';
const ACR_CERT = METHOD_ACR.password_certificate;

// t1 allows every method; rp-cert asks for the certificate method by default (step-up), and rp-bound
// has its access tokens bound to the client certificate (RFC 8705).
const TENANTS = TEST_TENANTS_YAML.replace('login_methods: [otp]', 'login_methods: [otp, password, password_otp, password_certificate]').replace(
  '      - { client_id: rp-post,',
  `      - { client_id: rp-cert, client_secret: rp-cert-secret-0123456789, name: 証明書必須サイト, redirect_uris: ['${REDIRECT_URI}'], default_acr_values: ['${ACR_CERT}'] }
      - { client_id: rp-bound, client_secret: rp-bound-secret-0123456789, name: 証明書バインドサイト, redirect_uris: ['${REDIRECT_URI}'], tls_client_certificate_bound_access_tokens: true }
      - { client_id: rp-post,`,
);

describe('client certificates: issuance, mutual TLS, certificate login, step-up, bound tokens', () => {
  let s: TestServer;
  let mtls: Server;
  let mtlsBase: string;
  let serverCa: string;
  let caDir: string;
  let rp: oidc.Configuration;
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.end();

  beforeAll(async () => {
    // The CA comes from files (CA_CERT_FILE/CA_KEY_FILE), so the mutual-TLS listener can be started
    // first and its URL given to the provider (MTLS_URL), as in a deployment.
    caDir = mkdtempSync(join(tmpdir(), 'idp-ca-'));
    const ca = await generateCertificateAuthority('Test Client CA');
    writeFileSync(join(caDir, 'ca.cert.pem'), ca.certPem);
    writeFileSync(join(caDir, 'ca.key.pem'), ca.keyPem);
    const credentials = await loadMtlsCredentials({ env: 'test', dataDir: caDir, issuer: 'http://127.0.0.1', certificates: { mtls: {} } as never });
    serverCa = credentials.cert;
    mtls = createMtlsServer({ ...credentials, ca: [ca.certPem], handler: (req, res) => handler(req, res) });
    mtlsBase = `https://127.0.0.1:${await listenMtls(mtls, 0, '127.0.0.1')}`;
    s = await startTestServer({
      tenants: parseTenants('t', TENANTS),
      env: { CA_CERT_FILE: join(caDir, 'ca.cert.pem'), CA_KEY_FILE: join(caDir, 'ca.key.pem'), MTLS_URL: mtlsBase },
    });
    handler = s.app.koa.callback();
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    mtls?.closeAllConnections();
    await new Promise((r) => mtls?.close(r));
    await s?.close();
    rmSync(caDir, { recursive: true, force: true });
  });

  const certs = () => s.app.services.certificates;

  async function account(loginMethod: string) {
    const u = uniqueUser('crt');
    const a = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, loginMethod, devices: [{ email: u.email }] });
    await s.app.services.accounts.setPassword(a.id, await hashSecret(PASSWORD));
    return { ...u, id: a.id, deviceId: a.devices[0]!.id };
  }

  /** A browser with the PKCS#12 file installed: TLS through node:https with the file and its password. */
  const browserWith = (tls: Omit<ClientTls, 'ca'> = {}) => new Agent(mtlsBase, mtlsFetch({ ...tls, ca: serverCa }));

  async function issuedP12(accountId: string, deviceId: string) {
    const download = await certs().pkcs12For(accountId, deviceId);
    if (!download) throw new Error('no certificate');
    return { pfx: download.data, passphrase: download.downloadPassword };
  }

  /** Identify and pass the password over `agent`, landing on the certificate step. */
  async function toCertificateStep(userId: string, agent: Agent, client = rp): Promise<StartedLogin> {
    const login = await startLogin(client, s.issuer, {}, agent);
    expect((await submit(login, 'identify', { userId })).status).toBe(303);
    expect((await submit(login, 'password', { password: PASSWORD })).status).toBe(303);
    return login;
  }

  async function tokensOf(login: StartedLogin, res: Response, client = rp) {
    const cb = await followToCallback(login.agent, res);
    return oidc.authorizationCodeGrant(client, cb, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
  }

  const eventsOf = async (userId: string) =>
    (await s.db.prisma.loginEvent.findMany({ where: { submittedUserId: userId }, orderBy: { createdAt: 'asc' } })).map((e) => e.result);

  test('a device certificate: subject, e-mail, clientAuth, validity from the contract; its PKCS#12 opens with its download password', async () => {
    const u = await account('password_certificate');
    const { certificate, downloadPassword } = await certs().issue(u.id, u.deviceId);
    expect(downloadPassword).toMatch(/^[A-Za-z2-9]{8}$/);

    const cert = new X509Certificate(certificate.certificatePem);
    expect(cert.subject).toContain(`CN=${u.userId}`);
    expect(cert.subjectAltName).toBe(`email:${u.email}`);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']); // clientAuth only
    expect(cert.ca).toBe(false);
    const ca = new X509Certificate(await certs().caPem());
    expect(cert.checkIssued(ca) && cert.verify(ca.publicKey)).toBe(true);
    expect(cert.serialNumber.toLowerCase()).toBe(certificate.serial);
    const days = (new Date(cert.validTo).getTime() - Date.now()) / 86400_000;
    expect(days).toBeGreaterThan(364);
    expect(days).toBeLessThan(366);

    // The device table's data: the download password in clear, from its encrypted form.
    const [listed] = await certs().listForAccount(u.id);
    expect(listed).toMatchObject({ id: certificate.id, deviceId: u.deviceId, status: 'valid', downloadPassword, renewable: false });
    expect(certificate.downloadPasswordEnc).not.toContain(downloadPassword);

    // OpenSSL reads the PKCS#12 file with the password: key, certificate and the CA chain.
    const dir = mkdtempSync(join(tmpdir(), 'p12-'));
    try {
      const file = join(dir, 'device.p12');
      const download = await certs().pkcs12For(u.id, u.deviceId);
      expect(download).toMatchObject({ contentType: 'application/x-pkcs12', downloadPassword });
      writeFileSync(file, download!.data);
      const out = execFileSync('openssl', ['pkcs12', '-in', file, '-passin', `pass:${downloadPassword}`, '-nodes'], { encoding: 'utf8' });
      expect(out).toContain('-----BEGIN PRIVATE KEY-----');
      expect(out.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(2);
      expect(out).toContain(`subject=CN = ${u.userId}`);
      expect(() => execFileSync('openssl', ['pkcs12', '-in', file, '-passin', 'pass:wrong-password', '-nodes'], { stdio: 'pipe' })).toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a real TLS handshake with the PKCS#12 file: the listener receives the certificate, the app sees it', async () => {
    const u = await account('password_certificate');
    await certs().issue(u.id, u.deviceId);
    const p12 = await issuedP12(u.id, u.deviceId);
    const port = Number(new URL(mtlsBase).port);
    const seen = await new Promise<{ authorized: boolean }>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, ca: serverCa, ...p12 }, () => {
        resolve({ authorized: socket.authorized });
        socket.end();
      });
      socket.on('error', reject);
    });
    expect(seen.authorized).toBe(true); // our side trusts the listener's (self-signed) certificate

    // The same certificate, read back by the application's extraction on a request.
    const reader = clientCertificateReader({ header: undefined, trustedProxies: [] });
    const previous = handler;
    let presented: string | undefined;
    handler = (req, res) => {
      presented = reader(req)?.x509.subject;
      previous(req, res);
    };
    try {
      await browserWith(p12).get('/health');
    } finally {
      handler = previous;
    }
    expect(presented).toContain(`CN=${u.userId}`);
  });

  test('password + certificate login end to end over mutual TLS: amr pwd and swk, the method acr', async () => {
    const u = await account('password_certificate');
    await certs().issue(u.id, u.deviceId);
    const login = await toCertificateStep(u.userId, browserWith(await issuedP12(u.id, u.deviceId)));
    const page = await (await login.agent.get(login.interactionPath)).text();
    expect(page).toContain('クライアント証明書による認証');
    expect(page).toContain(`CN=${u.userId}`);
    const res = await submit(login, 'certificate', {});
    const tokens = await tokensOf(login, res);
    expect(tokens.claims()).toMatchObject({ amr: ['pwd', 'swk'], acr: ACR_CERT, preferred_username: u.userId });
    expect(await eventsOf(u.userId)).toEqual(['success']);
  });

  describe('rejected certificates, each with its own page', () => {
    async function rejected(userId: string, agent: Agent) {
      const login = await toCertificateStep(userId, agent);
      const res = await submit(login, 'certificate', {});
      return { status: res.status, text: await res.text() };
    }

    test('no certificate: the page says so and links to the mutual-TLS page', async () => {
      const u = await account('password_certificate');
      await certs().issue(u.id, u.deviceId);
      // Over plain HTTP, the page offers the way to the listener instead of a form that cannot work.
      const plain = await toCertificateStep(u.userId, new Agent(s.issuer));
      const page = await (await plain.agent.get(plain.interactionPath)).text();
      expect(page).toContain('クライアント証明書が提示されていません');
      expect(page).toContain(`href="${mtlsBase}${plain.interactionPath}"`);
      // On the listener, without a certificate in the handshake.
      const r = await rejected(u.userId, browserWith());
      expect(r.status).toBe(401);
      expect(r.text).toContain('クライアント証明書が提示されませんでした');
      expect(await eventsOf(u.userId)).toEqual(['no_certificate']);
    });

    test('a certificate from another CA', async () => {
      const u = await account('password_certificate');
      await certs().issue(u.id, u.deviceId);
      const other = await foreignCertificate(u.userId, u.email);
      const r = await rejected(u.userId, browserWith(other));
      expect(r.status).toBe(401);
      expect(r.text).toContain('このサービスが発行したものではありません');
      expect(await eventsOf(u.userId)).toEqual(['wrong_certificate']);
    });

    test('an expired certificate', async () => {
      const u = await account('password_certificate');
      const day = 86400_000;
      await certs().issue(u.id, u.deviceId, { notBefore: new Date(Date.now() - 400 * day), notAfter: new Date(Date.now() - day) });
      const r = await rejected(u.userId, browserWith(await issuedP12(u.id, u.deviceId)));
      expect(r.status).toBe(401);
      expect(r.text).toContain('有効期限が切れています');
      expect(await eventsOf(u.userId)).toEqual(['expired_certificate']);
    });

    test('a revoked certificate (device deleted), which the published CRL lists', async () => {
      const u = await account('password_certificate');
      const { certificate } = await certs().issue(u.id, u.deviceId);
      const p12 = await issuedP12(u.id, u.deviceId);
      expect(await certs().revokeForDevice(u.deviceId)).toBe(1);
      const r = await rejected(u.userId, browserWith(p12));
      expect(r.status).toBe(401);
      expect(r.text).toContain('失効しています');
      expect(await eventsOf(u.userId)).toEqual(['revoked_certificate']);

      const res = await fetch(`${s.issuer}/certificates/crl`);
      expect(res.headers.get('content-type')).toBe('application/pkix-crl');
      const crl = new x509.X509Crl(new Uint8Array(await res.arrayBuffer()));
      const ca = new x509.X509Certificate(await (await fetch(`${s.issuer}/certificates/ca.pem`)).text());
      expect(await crl.verify({ publicKey: ca.publicKey })).toBe(true);
      expect(crl.entries.map((e) => e.serialNumber.toLowerCase())).toContain(certificate.serial);
      const entry = crl.entries.find((e) => e.serialNumber.toLowerCase() === certificate.serial);
      expect(entry?.reason).toBe(x509.X509CrlReason.cessationOfOperation);
    });

    test("another account's certificate", async () => {
      const owner = await account('password_certificate');
      await certs().issue(owner.id, owner.deviceId);
      const u = await account('password_certificate');
      await certs().issue(u.id, u.deviceId);
      const r = await rejected(u.userId, browserWith(await issuedP12(owner.id, owner.deviceId)));
      expect(r.status).toBe(401);
      expect(r.text).toContain('このユーザIDのものではありません');
      expect(await eventsOf(u.userId)).toEqual(['wrong_certificate']);
    });
  });

  test('an account created for password_certificate gets its certificates at activation, shown with their download passwords, and logs in with one', async () => {
    const u = uniqueUser('crtact');
    const { activation } = await s.app.services.accountService.create('t1', { userId: u.userId, devices: [{ email: u.email }], loginMethod: 'password_certificate' }, { actor: 'api' });
    const path = new URL(activation.url).pathname;
    const agent = new Agent(s.issuer);
    const verify = await agent.get(path);
    expect((await agent.post(path, { _csrf: csrfOf(await verify.text()), userId: u.userId, otp: activation.otp })).status).toBe(303);
    const register = await (await agent.get(`${path}/register`)).text();
    const registered = await agent.post(`${path}/register`, { _csrf: csrfOf(register), questionId: 'first_pet', answer: 'ポチ', password: PASSWORD, confirm: PASSWORD });
    expect(registered.headers.get('location')).toBe(`${path}/done`);

    const done = await (await agent.get(`${path}/done`)).text();
    expect(done).toContain('証明書ダウンロード用パスワード');
    expect(done).toContain(u.email);
    const passphrase = /<code>([A-Za-z2-9]{8})<\/code>/.exec(done)?.[1];
    expect(passphrase).toBeDefined();
    expect(done).toContain(`href="${path}/certificates/1"`);
    const en = await (await agent.get(`${path}/done?lang=en`)).text();
    expect(en).toContain('Certificate download password');

    const file = await agent.get(`${path}/certificates/1`);
    expect(file.status).toBe(200);
    expect(file.headers.get('content-type')).toBe('application/x-pkcs12');
    const pfx = Buffer.from(await file.arrayBuffer());
    // Only the browser that completed the activation sees the passwords and files.
    const stranger = new Agent(s.issuer);
    expect((await stranger.get(`${path}/certificates/1`)).status).toBe(404);
    expect(await (await stranger.get(`${path}/done`)).text()).not.toContain(passphrase!);

    const browser = browserWith({ pfx, passphrase });
    const login = await toCertificateStep(u.userId, browser);
    const tokens = await tokensOf(login, await submit(login, 'certificate', {}));
    expect(tokens.claims()).toMatchObject({ acr: ACR_CERT, amr: ['pwd', 'swk'] });
  });

  test('wrong passwords before the certificate count towards the same lockout', async () => {
    const owner = await account('password_certificate');
    await certs().issue(owner.id, owner.deviceId);
    const u = await account('password_certificate');
    await certs().issue(u.id, u.deviceId);
    const login = await startLogin(rp, s.issuer, {}, browserWith(await issuedP12(owner.id, owner.deviceId)));
    await submit(login, 'identify', { userId: u.userId });
    for (let i = 0; i < 4; i++) expect((await submit(login, 'password', { password: 'not-the-password' })).status).toBe(401);
    expect((await submit(login, 'password', { password: PASSWORD })).status).toBe(303);
    // The fifth failure, with someone else's certificate, locks the account.
    expect((await submit(login, 'certificate', {})).status).toBe(403);
    expect(await eventsOf(u.userId)).toEqual(['wrong_password', 'wrong_password', 'wrong_password', 'wrong_password', 'locked']);
  });

  test('step-up: a client requiring the certificate method asks a password-only session for the certificate alone', async () => {
    const u = await account('password');
    // Signed in with the password only.
    const first = await startLogin(rp, s.issuer);
    await submit(first, 'identify', { userId: u.userId });
    const signedIn = await tokensOf(first, await submit(first, 'password', { password: PASSWORD }));
    expect(signedIn.claims()).toMatchObject({ amr: ['pwd'], acr: METHOD_ACR.password });

    // The account moves to the certificate method (as the method change will do) and gets its certificate.
    await s.app.services.accounts.update(u.id, { loginMethod: 'password_certificate' });
    await certs().issue(u.id, u.deviceId);
    const browser = browserWith(await issuedP12(u.id, u.deviceId));
    for (const [k, v] of first.agent.cookies) browser.cookies.set(k, v); // the same browser, now on the listener

    const rpCert = await discover(s.issuer, 'rp-cert', 'rp-cert-secret-0123456789');
    const login = await startLogin(rpCert, s.issuer, {}, browser);
    const page = await (await browser.get(login.interactionPath)).text();
    expect(page).toContain('クライアント証明書による認証'); // straight to the missing factor: no user ID, no password
    const tokens = await tokensOf(login, await submit(login, 'certificate', {}), rpCert);
    expect(tokens.claims()).toMatchObject({ sub: u.id, acr: ACR_CERT, amr: ['pwd', 'swk'] });

    // The stronger session now satisfies the client without any interaction.
    const again = await startLogin(rpCert, s.issuer, {}, browser).catch((e: Error) => e);
    expect(again).toBeInstanceOf(Error); // redirected straight back to the client, not to a login page
    expect((again as Error).message).toContain(REDIRECT_URI);
  });

  test('step-up that the account cannot perform (no certificate) gets a clear page', async () => {
    const u = await account('password');
    const first = await startLogin(rp, s.issuer);
    await submit(first, 'identify', { userId: u.userId });
    await tokensOf(first, await submit(first, 'password', { password: PASSWORD }));
    const login = await startLogin(rp, s.issuer, { acr_values: ACR_CERT }, first.agent);
    const res = await login.agent.get(login.interactionPath);
    expect(res.status).toBe(403);
    expect(await res.text()).toContain('このアカウントではその方法を利用できません');
  });

  test('a fresh login asked for the certificate method, by an account without certificates: a clear page after the password', async () => {
    const u = await account('password');
    const rpCert = await discover(s.issuer, 'rp-cert', 'rp-cert-secret-0123456789');
    const login = await startLogin(rpCert, s.issuer, {}, browserWith());
    await submit(login, 'identify', { userId: u.userId });
    const res = await submit(login, 'password', { password: PASSWORD });
    expect(res.status).toBe(403);
    expect(await res.text()).toContain('ID・パスワード＋クライアント証明書');
    expect(await eventsOf(u.userId)).toEqual(['method_unavailable']);
  });

  test('RFC 8705: a token request over mutual TLS gets an access token bound to the certificate (cnf x5t#S256)', async () => {
    const u = await account('password_certificate');
    await certs().issue(u.id, u.deviceId);
    const p12 = await issuedP12(u.id, u.deviceId);
    // The relying site's own TLS client: here the same certificate, through the listener's endpoints.
    const viaListener = mtlsFetch({ ...p12, ca: serverCa }, (url) => (url.origin === s.issuer ? new URL(url.pathname + url.search, mtlsBase) : url));
    const bound = await oidc.discovery(new URL(s.issuer), 'rp-bound', 'rp-bound-secret-0123456789', undefined, {
      execute: [oidc.allowInsecureRequests],
      [oidc.customFetch]: viaListener as oidc.CustomFetch,
    });
    expect(bound.serverMetadata().mtls_endpoint_aliases?.token_endpoint).toBe(`${mtlsBase}/token`);
    const login = await toCertificateStep(u.userId, browserWith(p12), bound);
    const tokens = await tokensOf(login, await submit(login, 'certificate', {}), bound);
    const introspected = await oidc.tokenIntrospection(bound, tokens.access_token);
    const row = await s.db.prisma.certificate.findFirstOrThrow({ where: { accountId: u.id, revokedAt: null } });
    const thumbprint = createHash('sha256').update(new X509Certificate(row.certificatePem).raw).digest('base64url');
    expect(introspected.cnf).toEqual({ 'x5t#S256': thumbprint });
    // The bound token works at userinfo only with the certificate.
    expect((await oidc.fetchUserInfo(bound, tokens.access_token, oidc.skipSubjectCheck)).sub).toBe(u.id);
    const plain = await fetch(`${s.issuer}/me`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(plain.status).toBe(401);
  });

  test('a reverse proxy header is believed only from a trusted address', async () => {
    const u = await account('password_certificate');
    const { certificate } = await certs().issue(u.id, u.deviceId);
    const header = encodeURIComponent(certificate.certificatePem);
    const reader = clientCertificateReader({ header: 'X-Client-Cert', trustedProxies: ['10.0.0.0/8', '192.0.2.1'] });
    const req = (remoteAddress: string) => ({ socket: { remoteAddress }, headers: { 'x-client-cert': header } }) as unknown as IncomingMessage;
    expect(reader(req('10.1.2.3'))?.x509.subject).toContain(`CN=${u.userId}`);
    expect(reader(req('::ffff:192.0.2.1'))?.via).toBe('proxy');
    expect(reader(req('198.51.100.7'))).toBeUndefined();
    expect(clientCertificateReader({ header: undefined, trustedProxies: ['10.0.0.0/8'] })(req('10.1.2.3'))).toBeUndefined();
  });
});

/** A client certificate for the same user from a CA this provider has never seen. */
async function foreignCertificate(userId: string, email: string): Promise<{ key: string; cert: string }> {
  const rsa = { ...RSA_SIGNING, modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]) };
  const caKeys = (await webcrypto.subtle.generateKey(rsa, true, ['sign', 'verify'])) as CryptoKeyPair;
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=Anshin Login Client CA',
    keys: caKeys,
    signingAlgorithm: RSA_SIGNING,
    extensions: [new x509.BasicConstraintsExtension(true, 0, true)],
  });
  const keys = (await webcrypto.subtle.generateKey(rsa, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    subject: `CN=${userId}`,
    issuer: caCert.subject,
    publicKey: keys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: RSA_SIGNING,
    extensions: [
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'email', value: email }]),
    ],
  });
  const key = x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
  return { key, cert: cert.toString('pem') };
}
