import { existsSync, mkdirSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core';
import { parseTenants } from '../../src/config/tenants.js';
import { startTestServer, type TestServer, type TestServerOptions } from './harness.js';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const SCREENSHOT_DIR = join(process.cwd(), 'test-output', 'screenshots');

/**
 * Why browser tests would be skipped, or undefined when they must run. Only a developer machine
 * without Chromium skips; in CI a missing browser is a failure, not a silent skip.
 */
export function browserSkipReason(): string | undefined {
  if (existsSync(CHROMIUM_PATH) || process.env.CI) return undefined;
  return `Chromium not found at ${CHROMIUM_PATH} (apt-get install -y chromium fonts-noto-cjk, or set CHROMIUM_PATH); browser tests skipped`;
}

export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
}

/** A fresh context (own cookies) per test, with the language the browser announces. */
export async function newContext(browser: Browser, locale: string, opts: BrowserContextOptions = {}): Promise<BrowserContext> {
  const context = await browser.newContext({ locale, viewport: { width: 900, height: 800 }, ...opts });
  // Fail a step in seconds rather than at Jest's test timeout.
  context.setDefaultTimeout(10_000);
  return context;
}

/**
 * `describe` for a browser suite: skipped, with the reason in its title, only when
 * browserSkipReason() says so (never in CI, where a missing Chromium must fail).
 */
export function describeBrowser(title: string, fn: () => void): void {
  const skipReason = browserSkipReason();
  if (skipReason) console.warn(skipReason);
  const describeOrSkip = skipReason ? describe.skip : describe;
  describeOrSkip(`${title}${skipReason ? ` (SKIPPED: ${skipReason})` : ''}`, fn);
}

export interface BrowserSuite<S> {
  /** The started server; only inside hooks and tests, once beforeAll has run. */
  readonly server: S;
  readonly browser: Browser;
  /** A page in a fresh context (see newContext), closed after the test. */
  openPage(locale: string, opts?: BrowserContextOptions): Promise<Page>;
}

/**
 * Call inside a describe block: beforeAll starts the server and Chromium, then runs `started`;
 * afterEach closes the test's contexts; afterAll closes the browser and the server.
 */
export function useBrowserSuite<S extends { close(): Promise<void> }>(
  start: () => Promise<S>,
  started?: (server: S, browser: Browser) => void | Promise<void>,
): BrowserSuite<S> {
  let server: S | undefined;
  let browser: Browser | undefined;
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    // Keep whichever started, so afterAll can close it even when the other failed (or Jest hangs).
    const [startedServer, launched] = await Promise.allSettled([start(), launchBrowser()]);
    if (startedServer.status === 'fulfilled') server = startedServer.value;
    if (launched.status === 'fulfilled') browser = launched.value;
    for (const r of [startedServer, launched]) if (r.status === 'rejected') throw r.reason;
    await started?.(server!, browser!);
  });
  afterEach(async () => {
    for (const c of contexts.splice(0)) await c.close();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  const running = <T>(value: T | undefined, what: string): T => {
    if (value === undefined) throw new Error(`the browser suite's ${what} is not running (used outside a test, or beforeAll failed)`);
    return value;
  };
  return {
    get server() {
      return running(server, 'server');
    },
    get browser() {
      return running(browser, 'browser');
    },
    async openPage(locale, opts) {
      const context = await newContext(running(browser, 'browser'), locale, opts);
      contexts.push(context);
      return context.newPage();
    },
  };
}

/** Saves a full-page PNG under test-output/screenshots/ for a person to look at. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const path = join(SCREENSHOT_DIR, name.endsWith('.png') ? name : `${name}.png`);
  try {
    await page.screenshot({ path, fullPage: true });
  } catch (err) {
    // Chromium now and then refuses a capture on a busy machine ("Unable to capture screenshot");
    // the picture is for people, not an assertion, so it gets one more try.
    if (!/Unable to capture screenshot/.test(String(err))) throw err;
    await page.screenshot({ path, fullPage: true });
  }
  return path;
}

export interface BrowserTestServer extends TestServer {
  /** The public origin the browser uses; also the provider's issuer. */
  origin: string;
}

/**
 * The demo relying site redirects to its client's first redirect_uri, so that URI must carry the
 * server's port; but startTestServer picks its port only after it has taken the tenants. So we
 * reserve a port first with a TCP forwarder, make it the issuer and the demo client's URIs, and
 * pipe it to wherever the harness ended up listening.
 */
export async function startDemoTestServer(opts: Omit<TestServerOptions, 'tenants'> = {}): Promise<BrowserTestServer> {
  const sockets = new Set<Socket>();
  let target: number | undefined;
  const forwarder: Server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    if (target === undefined) return void client.destroy();
    const upstream = connect(target, '127.0.0.1');
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => forwarder.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(forwarder.address() as AddressInfo).port}`;

  const tenants = parseTenants(
    'browser test tenants',
    `
tenants:
  - id: demo
    name: デモ
    clients:
      - { client_id: demo-site, client_secret: demo-site-secret-change-me, name: デモサイト, redirect_uris: ['${origin}/demo/callback'], post_logout_redirect_uris: ['${origin}/demo/'] }
`,
  );
  let s: TestServer;
  try {
    s = await startTestServer({ ...opts, tenants, env: { ...opts.env, ISSUER: origin } });
  } catch (e) {
    forwarder.close();
    throw e;
  }
  target = Number(new URL(s.issuer).port);
  return {
    ...s,
    origin,
    issuer: origin,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => forwarder.close(() => resolve()));
      await s.close();
    },
  };
}

/**
 * Signs `u` in to the account area in the browser, the way a user does: the user-ID page, the mailed
 * code, then the area's top page. `t`: the page's button texts in the page's language.
 */
export async function signInToAreaInBrowser(
  page: Page,
  s: Pick<TestServer, 'issuer' | 'smtp'>,
  u: { userId: string; email: string },
  t: { send: string; otpSubmit: string },
): Promise<void> {
  await page.goto(`${s.issuer}/account/?client_id=rp-basic`);
  const before = s.smtp.messages.length;
  await page.locator('#userId').fill(u.userId);
  await page.getByRole('button', { name: t.send, exact: true }).click();
  await page.locator('#otp').fill(await s.smtp.otpFor(u.email, before));
  await page.locator('form[action$="/otp"]').getByRole('button', { name: t.otpSubmit, exact: true }).click();
  await page.locator('#devices').waitFor();
}
