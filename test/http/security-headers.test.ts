// Security headers: helmet's, worked out once per process (securityHeaders), must be exactly what
// helmet sets on each response; and the provider's pages carry them with its own policy.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import helmet, { type HelmetOptions } from 'helmet';
import Koa from 'koa';
import { securityHeaders } from '../../src/http/security-headers.js';
import { startTestServer, type TestServer } from '../support/harness.js';
import { discover, startLogin } from '../support/browser-less.js';

async function headersOf(handler: http.RequestListener): Promise<Record<string, string>> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    await res.text();
    const out: Record<string, string> = {};
    res.headers.forEach((v, k) => {
      if (!['date', 'connection', 'keep-alive', 'content-length', 'content-type', 'transfer-encoding'].includes(k)) out[k] = v;
    });
    return out;
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

const variants: Array<[string, HelmetOptions]> = [
  ['defaults', {}],
  ['the provider’s options over https', { contentSecurityPolicy: { useDefaults: true, directives: { 'form-action': ["'self'", 'https://rp.example'], 'upgrade-insecure-requests': [], 'script-src': ["'self'"] } }, strictTransportSecurity: true }],
  ['the provider’s options over http', { contentSecurityPolicy: { useDefaults: true, directives: { 'form-action': ["'self'"], 'upgrade-insecure-requests': null, 'script-src': ["'self'"] } }, strictTransportSecurity: false }],
];

test.each(variants)('with %s they are the headers helmet sets on a response', async (_name, options) => {
  const viaHelmet = await headersOf((req, res) => helmet(options)(req, res, () => res.end('ok')));
  const app = new Koa();
  app.use(securityHeaders(options));
  app.use((ctx) => {
    ctx.body = 'ok';
  });
  const ours = await headersOf(app.callback());
  expect(Object.keys(viaHelmet).length).toBeGreaterThan(8);
  expect(ours).toEqual(viaHelmet);
});

test('a policy that would vary per request is refused', () => {
  expect(() => securityHeaders({ contentSecurityPolicy: { directives: { 'script-src': ["'self'", () => "'nonce-x'"] } } })).toThrow(/varies per request/);
});

describe('the provider', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server?.close());

  test('its login page forbids framing and lets forms go only to itself and its relying sites', async () => {
    const rp = await discover(server.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const login = await startLogin(rp, server.issuer);
    const page = await login.agent.get(login.interactionPath);
    expect(page.status).toBe(200);
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toMatch(/form-action 'self'[^;]* http:\/\/127\.0\.0\.1/);
    expect(csp).toContain("frame-ancestors 'self'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('upgrade-insecure-requests'); // plain http on loopback
    expect(page.headers.get('x-frame-options')).toBe('SAMEORIGIN');
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    expect(page.headers.get('strict-transport-security')).toBeNull();
    expect(page.headers.get('x-request-id')).toMatch(/^[A-Za-z0-9_-]{16}$/);
  });
});
