// Auth.js core (@auth/core, the engine of NextAuth.js and SvelteKitAuth) signs a user in with the
// mailed code through its Auth() handler with a generic OpenID Connect provider, served over HTTP as a
// framework would: Web Requests in, Web Responses out.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Auth, type AuthConfig } from '@auth/core';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Browser, relyingPartyTenants, signInAtProvider } from '../support/relying-party.js';

/** node:http to Web Request/Response, the adapter every Auth.js framework integration has. */
async function toRequest(req: IncomingMessage, origin: string): Promise<Request> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const headers = new Headers();
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
  const body = req.method === 'GET' || req.method === 'HEAD' ? undefined : Buffer.concat(chunks);
  return new Request(new URL(req.url ?? '/', origin), { method: req.method, headers, body });
}

async function send(res: ServerResponse, response: Response) {
  res.statusCode = response.status;
  for (const [k, v] of response.headers) if (k !== 'set-cookie') res.setHeader(k, v);
  const cookies = response.headers.getSetCookie();
  if (cookies.length) res.setHeader('set-cookie', cookies);
  res.end(Buffer.from(await response.arrayBuffer()));
}

describe('Auth.js core signs in against the provider', () => {
  let s: TestServer;
  let rp: Server;
  let site: string;
  let account: { id: string };
  const user = uniqueUser('authjs');

  beforeAll(async () => {
    rp = createServer();
    await new Promise<void>((resolve) => rp.listen(0, '127.0.0.1', resolve));
    site = `http://127.0.0.1:${(rp.address() as AddressInfo).port}`;
    const client = { id: 'authjs-site', secret: 'authjs-site-secret-0123456789' };
    s = await startTestServer({ tenants: relyingPartyTenants({ ...client, redirectUri: `${site}/auth/callback/idp` }) });
    account = await s.app.services.accounts.create({ tenantId: 'rp', userId: user.userId, devices: [{ email: user.email }] });

    const config: AuthConfig = {
      basePath: '/auth',
      secret: 'a-long-random-auth-js-secret-for-the-test-0123456789',
      trustHost: true,
      providers: [{ id: 'idp', name: 'Anshin Login', type: 'oidc', issuer: s.issuer, clientId: client.id, clientSecret: client.secret }],
      callbacks: {
        // Auth.js gives its users ids of its own; the provider's subject is the account's
        // providerAccountId. Kept in the session token as its docs show for other provider data.
        jwt: ({ token, account, profile }) => (account ? { ...token, subject: account.providerAccountId, username: profile?.preferred_username } : token),
        session: ({ session, token }) => ({ ...session, subject: token.subject, username: token.username }),
      },
    };
    rp.on('request', (req, res) => {
      void (async () => {
        const request = await toRequest(req, site);
        const url = new URL(request.url);
        if (url.pathname.startsWith('/auth/')) return send(res, await Auth(request, config));
        if (url.pathname === '/protected') {
          // As a framework's middleware does: ask Auth.js for the session, send the signed-out to sign in.
          const session = await Auth(new Request(`${site}/auth/session`, { headers: request.headers }), config);
          const body = (await session.json()) as { subject?: string } | null;
          if (!body?.subject) return send(res, Response.redirect(`${site}/auth/signin?callbackUrl=${encodeURIComponent(url.href)}`, 302));
          return send(res, Response.json(body));
        }
        return send(res, new Response('not found', { status: 404 }));
      })().catch((e: unknown) => send(res, new Response(String(e), { status: 500 })));
    });
  });

  afterAll(async () => {
    rp?.closeAllConnections();
    await new Promise<void>((resolve) => (rp ? rp.close(() => resolve()) : resolve()));
    await s?.close();
  });

  test('the protected page, the sign-in button, the login with the mailed code, then the user on the page', async () => {
    const browser = new Browser();
    // Auth.js' own sign-in page: one button per provider, a form that posts the CSRF token.
    const signin = await browser.open(`${site}/protected`);
    expect(signin.url.pathname).toBe('/auth/signin');
    const html = await signin.res.text();
    const form = /<form action="([^"]*\/auth\/signin\/idp)" method="POST">([\s\S]*?)<\/form>/.exec(html);
    expect(form).not.toBeNull();
    const fields = Object.fromEntries([...form![2]!.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"/g)].map((m) => [m[1]!, m[2]!.replace(/&amp;/g, '&')]));
    expect(fields.csrfToken).toBeTruthy();

    const loginPage = await browser.follow(await browser.post(new URL(form![1]!, signin.url), fields));
    expect(loginPage.url.origin).toBe(s.issuer);
    const authorize = browser.visited.find((u) => u.origin === s.issuer && u.pathname === '/auth')!;
    expect(authorize.searchParams.get('code_challenge_method')).toBe('S256');
    const back = await signInAtProvider(browser, s, loginPage, user);
    expect(back.url.href).toBe(`${site}/protected`);
    expect(back.res.status).toBe(200);
    expect(await back.res.json()).toMatchObject({ subject: account.id, username: user.userId });
  });
});
