// Signed cookies: the provider and the app check signatures with CookieSigner, which must accept
// exactly what Keygrip (Koa's and oidc-provider's default) signs, with every key of a rotation.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Keygrip from 'keygrip';
import Koa from 'koa';
import { CookieSigner } from '../../src/http/cookie-signer.js';
import { startTestServer, type TestServer } from '../support/harness.js';
import { discover, startLogin } from '../support/browser-less.js';

test('signatures are the ones Keygrip makes, with the first key', () => {
  const keys = ['current-key-0123456789', 'older-key-abcdefghij'];
  const signer = new CookieSigner(keys);
  for (const data of ['csrf=abc', '_interaction=xyz.ä', '']) expect(signer.sign(data)).toBe(new Keygrip(keys).sign(data));
});

test('a signature by any key of the rotation is recognised, with the index of that key', () => {
  const signer = new CookieSigner(['new', 'old', 'oldest']);
  expect(signer.index('a=1', new Keygrip(['new']).sign('a=1'))).toBe(0);
  expect(signer.index('a=1', new Keygrip(['old']).sign('a=1'))).toBe(1);
  expect(signer.index('a=1', new Keygrip(['oldest']).sign('a=1'))).toBe(2);
  expect(signer.verify('a=1', new Keygrip(['oldest']).sign('a=1'))).toBe(true);
});

test('forged, altered, truncated and foreign signatures are refused', () => {
  const signer = new CookieSigner(['k1', 'k2']);
  const good = signer.sign('a=1');
  expect(signer.index('a=2', good)).toBe(-1); // other data
  expect(signer.index('a=1', good.slice(1))).toBe(-1); // shorter
  expect(signer.index('a=1', `${good}A`)).toBe(-1); // longer
  expect(signer.index('a=1', `${good[0] === 'A' ? 'B' : 'A'}${good.slice(1)}`)).toBe(-1); // one character changed
  expect(signer.index('a=1', new Keygrip(['someone-else']).sign('a=1'))).toBe(-1);
  expect(signer.index('a=1', '')).toBe(-1);
  expect(signer.verify('a=1', 'ü'.repeat(27))).toBe(false); // multi-byte input of the right length in characters
});

test('a signature checked before is still only good for its own value', () => {
  const signer = new CookieSigner(['k1']);
  const sig = signer.sign('a=1');
  expect(signer.index('a=1', sig)).toBe(0);
  expect(signer.index('a=1', sig)).toBe(0); // remembered
  // The same characters split differently between signature and value.
  expect(signer.index(`${sig.slice(-3)}a=1`, sig.slice(0, -3))).toBe(-1);
  expect(signer.index('a=1', sig.slice(0, -1))).toBe(-1);
  expect(signer.index('a=2', sig)).toBe(-1);
  // Many different valid cookies later (more than it remembers), the first still checks out.
  for (let i = 0; i < 10_050; i++) expect(signer.index(`c=${i}`, signer.sign(`c=${i}`))).toBe(0);
  expect(signer.index('a=1', sig)).toBe(0);
});

test('a value signed again, before and after many others, gets the same (Keygrip) signature, which checks out', () => {
  const keys = ['k1', 'k0'];
  const signer = new CookieSigner(keys);
  const keygrip = new Keygrip(keys);
  expect(signer.sign('_interaction=')).toBe(keygrip.sign('_interaction='));
  expect(signer.sign('_interaction=')).toBe(keygrip.sign('_interaction='));
  expect(signer.index('_interaction=', keygrip.sign('_interaction='))).toBe(0);
  for (let i = 0; i < 10_050; i++) signer.sign(`c=${i}`);
  expect(signer.sign('_interaction=')).toBe(keygrip.sign('_interaction='));
  expect(signer.index('c=7', keygrip.sign('c=7'))).toBe(0);
  expect(signer.index('c=7', keygrip.sign('c=8'))).toBe(-1);
});

test('no keys, or an empty key, is a configuration error', () => {
  expect(() => new CookieSigner([])).toThrow(/cookie keys/);
  expect(() => new CookieSigner(['ok', ''])).toThrow(/cookie keys/);
});

test('Koa reads cookies a Keygrip-keyed app signed, and refuses a tampered one', async () => {
  const keys = ['rotated-in', 'still-valid'];
  const writer = new Koa();
  writer.keys = [keys[1]!]; // signed before the rotation
  writer.use((ctx) => {
    ctx.cookies.set('pref', 'ja', { signed: true });
    ctx.body = 'ok';
  });
  const reader = new Koa();
  reader.keys = new CookieSigner(keys);
  reader.use((ctx) => {
    ctx.body = ctx.cookies.get('pref', { signed: true }) ?? '(none)';
  });
  const listen = (app: Koa) =>
    new Promise<http.Server>((resolve) => {
      const server = http.createServer(app.callback()).listen(0, '127.0.0.1', () => resolve(server));
    });
  const [w, r] = await Promise.all([listen(writer), listen(reader)]);
  try {
    const url = (s: http.Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}/`;
    const cookies = (await fetch(url(w))).headers.getSetCookie().map((c) => c.split(';')[0]!);
    expect(cookies.map((c) => c.split('=')[0])).toEqual(['pref', 'pref.sig']);
    expect(await (await fetch(url(r), { headers: { cookie: cookies.join('; ') } })).text()).toBe('ja');
    const tampered = cookies.map((c) => c.replace('pref=ja', 'pref=en'));
    expect(await (await fetch(url(r), { headers: { cookie: tampered.join('; ') } })).text()).toBe('(none)');
  } finally {
    await Promise.all([w, r].map((s) => new Promise((resolve) => s.close(resolve))));
  }
});

describe('the provider', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(() => server?.close());

  test('uses one CookieSigner for its own cookies and the app’s, and a login page opens with them', async () => {
    const provider = server.app.provider;
    expect(provider.keys).toBeInstanceOf(CookieSigner);
    expect(server.app.koa.keys).toBe(provider.keys);
    const rp = await discover(server.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const login = await startLogin(rp, server.issuer);
    // The interaction cookie (signed by the provider) is read back on the page, which sets the app's
    // signed CSRF cookie and puts its token in the form.
    const page = await login.agent.get(login.interactionPath);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/name="_csrf" value="[A-Za-z0-9_-]{43}"/);
  });
});
