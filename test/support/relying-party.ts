// Helpers for tests in which a real relying-party library (or Apache) signs a user in against the
// provider: a browser-like client that keeps cookies per origin and follows redirects across the
// relying site and the provider, and the user's part of the login (user ID, then the mailed code).
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { parseTenants } from '../../src/config/tenants.js';
import type { Tenant } from '../../src/config/index.js';
import type { TestServer } from './harness.js';
import { csrfOf } from './browser-less.js';

/** One HTTP request with exactly these headers (bounded wait), answered as a Web Response. */
function navigate(url: URL, method: string, body: string | undefined, headers: Record<string, string>): Promise<Response> {
  return new Promise((resolve, reject) => {
    let answer: IncomingMessage | undefined;
    const chunks: Buffer[] = [];
    const done = () => {
      const res = answer!;
      const h = new Headers();
      for (let i = 0; i < res.rawHeaders.length; i += 2) h.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
      const status = res.statusCode ?? 0;
      resolve(new Response([204, 205, 304].includes(status) ? null : Buffer.concat(chunks), { status, headers: h }));
    };
    // A connection per request, so nothing carries over from one response to the next.
    const req = httpRequest(url, { agent: false, method, headers: body ? { ...headers, 'content-length': String(Buffer.byteLength(body)) } : headers, timeout: 15_000 }, (res) => {
      answer = res;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', done);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url.href}`)));
    // Bytes after a complete response are ignored, as browsers do: mod_auth_openidc's error pages are
    // followed by a second (500) page on the same connection.
    req.on('error', (e) => (answer ? done() : reject(e)));
    req.end(body);
  });
}

/** A response with the URL it answered, so relative redirects and forms resolve like in a browser. */
export interface Page {
  url: URL;
  res: Response;
}

/** Cookies per origin (host and port), redirects followed by hand, like a browser with no scripts. */
export class Browser {
  private readonly jars = new Map<string, Map<string, string>>();
  /** Every URL requested, in order: lets a test assert which parties the user passed through. */
  readonly visited: URL[] = [];

  cookies(origin: string): Map<string, string> {
    let jar = this.jars.get(origin);
    if (!jar) this.jars.set(origin, (jar = new Map()));
    return jar;
  }

  async request(method: 'GET' | 'POST', target: string | URL, form?: Record<string, string>): Promise<Page> {
    const url = new URL(target);
    this.visited.push(url);
    const jar = this.cookies(url.origin);
    const body = form ? new URLSearchParams(form).toString() : undefined;
    const res = await navigate(url, method, body, {
      cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '),
      accept: 'text/html,application/xhtml+xml',
      'accept-language': 'ja',
      'user-agent': 'relying-party-test/1.0',
      // What a browser sends when the user follows a link or submits a form (fetch() cannot: it always
      // says "cors"); mod_auth_openidc answers 401 instead of redirecting to anything else.
      'sec-fetch-mode': 'navigate',
      'sec-fetch-dest': 'document',
      ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
    });
    for (const c of res.headers.getSetCookie()) {
      const [pair = ''] = c.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i).trim();
      const value = pair.slice(i + 1).trim();
      if (/expires=Thu, 01 Jan 1970|max-age=0\b/i.test(c) || value === '') jar.delete(name);
      else jar.set(name, value);
    }
    return { url, res };
  }

  get(target: string | URL) {
    return this.request('GET', target);
  }

  post(target: string | URL, form: Record<string, string>) {
    return this.request('POST', target, form);
  }

  /** Follows redirects (at most 15) with GET; answers the first page that is not a redirect. */
  async follow(page: Page): Promise<Page> {
    let current = page;
    for (let i = 0; i < 15; i++) {
      const location = current.res.headers.get('location');
      if (current.res.status < 300 || current.res.status >= 400 || !location) return current;
      await current.res.arrayBuffer();
      current = await this.get(new URL(location, current.url));
    }
    throw new Error(`too many redirects, last at ${current.url.href}`);
  }

  /** GET and follow. */
  async open(target: string | URL): Promise<Page> {
    return this.follow(await this.get(target));
  }
}

/**
 * The user's part at the provider: on its login page, submits the user ID, reads the mailed code from
 * the test SMTP server, submits it, and follows the redirects back to the relying site.
 */
export async function signInAtProvider(browser: Browser, s: TestServer, loginPage: Page, user: { userId: string; email: string }): Promise<Page> {
  const m = /^\/interaction\/([^/?]+)$/.exec(loginPage.url.pathname);
  if (loginPage.url.origin !== s.issuer || !m || loginPage.res.status !== 200) {
    throw new Error(`expected the provider's login page, got ${loginPage.res.status} at ${loginPage.url.href}: ${(await loginPage.res.text()).slice(0, 300)}`);
  }
  const interaction = `${s.issuer}/interaction/${m[1]}`;
  const before = s.smtp.messages.length;
  const identified = await browser.post(`${interaction}/identify`, { _csrf: csrfOf(await loginPage.res.text()), userId: user.userId });
  if (identified.res.status !== 303) throw new Error(`user ID not accepted: ${identified.res.status}`);
  const otpPage = await browser.follow(identified);
  const otp = await s.smtp.otpFor(user.email, before);
  return browser.follow(await browser.post(`${interaction}/otp`, { _csrf: csrfOf(await otpPage.res.text()), otp }));
}

/** A free loopback port, for a relying site that must be registered before it can start. */
export async function freePort(): Promise<number> {
  const probe: Server = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** One tenant with one confidential client: the relying site under test. */
export function relyingPartyTenants(client: { id: string; secret: string; redirectUri: string; postLogoutRedirectUri?: string }): Tenant[] {
  const postLogout = client.postLogoutRedirectUri ? `, post_logout_redirect_uris: ['${client.postLogoutRedirectUri}']` : '';
  return parseTenants(
    'relying party',
    `
tenants:
  - id: rp
    name: 利用サイト
    contract: { login_methods: [otp] }
    clients:
      - { client_id: ${client.id}, client_secret: ${client.secret}, name: 利用サイト, redirect_uris: ['${client.redirectUri}']${postLogout} }
`,
  );
}

/** A relying site (or web server) running as a child process until close(). */
export interface ChildSite {
  child: ChildProcess;
  /** What it printed so far on stdout and stderr, for failure messages. */
  output(): string;
  close(): Promise<void>;
}

/**
 * Starts `command` and waits (bounded) until `ready` answers true or the process exits. The process is
 * ended at close() by its own id.
 */
export async function startChild(command: string, args: string[], opts: { env?: Record<string, string>; ready: () => Promise<boolean>; timeoutMs?: number }): Promise<ChildSite> {
  const child = spawn(command, args, { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const site: ChildSite = {
    child,
    output: () => output,
    async close() {
      if (!gone) child.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
      if (!gone) child.kill('SIGKILL');
    },
  };
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  while (!gone && Date.now() < deadline) {
    if (await opts.ready().catch(() => false)) return site;
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 100))]);
  }
  await site.close();
  throw new Error(`${command} did not become ready: ${output.slice(-2000)}`);
}

const tsxCli = createRequire(import.meta.url).resolve('tsx/cli');

/**
 * Runs a relying site written in TypeScript (test/rp/sites/) in its own Node process, as it would run in
 * production: some libraries load ESM-only dependencies with require(), which Node supports but Jest's
 * module system does not. `env` configures it (ISSUER, PORT, ...); ready once `url` answers.
 */
export function startNodeSite(script: string, env: Record<string, string>, url: string): Promise<ChildSite> {
  return startChild(process.execPath, [tsxCli, script], {
    env: { NODE_ENV: 'test', ...env },
    ready: async () => {
      const res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      return true;
    },
  });
}
