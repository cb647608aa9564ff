// Outgoing requests of the provider reach only public addresses, on every supported Node version;
// the back-channel logout URIs registered in config/ are the one exception.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BackchannelLogout } from '../../src/oidc/backchannel.js';
import { assertPublicDestination, createOutboundFetch, isSpecialUseAddress, OutboundRequestRefused } from '../../src/oidc/outbound-fetch.js';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { BACKCHANNEL_EVENT, startLogoutReceiver, tenantsWithBackchannel } from '../support/logout-receiver.js';
import { decodeJwt } from 'jose';

describe('isSpecialUseAddress', () => {
  test.each([
    '127.0.0.1',
    '127.255.255.254',
    '0.0.0.0',
    '10.1.2.3',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.1.1',
    '100.64.0.1',
    '169.254.169.254',
    '224.0.0.1',
    '255.255.255.255',
    '::',
    '::1',
    'fe80::1',
    'fc00::1',
    'fd12:3456:789a::1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::ffff:10.0.0.1',
    '::ffff:169.254.169.254',
    '::127.0.0.1',
    '64:ff9b::a00:1',
    'ff02::1',
    'not-an-address',
  ])('refuses %s', (address) => {
    expect(isSpecialUseAddress(address)).toBe(true);
  });

  test.each(['8.8.8.8', '93.184.216.34', '172.32.0.1', '192.169.0.1', '100.128.0.1', '2606:4700:4700::1111', '2001:4860:4860::8888', '::ffff:8.8.8.8'])('allows %s', (address) => {
    expect(isSpecialUseAddress(address)).toBe(false);
  });
});

describe('assertPublicDestination', () => {
  test('checks every address a host name resolves to', async () => {
    const resolve = async () => ['93.184.216.34', '10.0.0.5'];
    await expect(assertPublicDestination(new URL('https://rp.example/logout'), resolve)).rejects.toThrow(/10\.0\.0\.5/);
    await expect(assertPublicDestination(new URL('https://rp.example/logout'), async () => ['93.184.216.34', '2606:4700::1'])).resolves.toBeUndefined();
  });

  test.each(['http://localhost/x', 'http://127.1/x', 'http://0x7f000001/x', 'http://[::1]/x', 'http://[::ffff:127.0.0.1]/x', 'http://169.254.169.254/latest/meta-data/'])(
    'refuses %s with the system resolver',
    async (url) => {
      await expect(assertPublicDestination(new URL(url))).rejects.toBeInstanceOf(OutboundRequestRefused);
    },
  );

  test('refuses other schemes and names that do not resolve', async () => {
    await expect(assertPublicDestination(new URL('file:///etc/passwd'))).rejects.toThrow(/scheme/);
    await expect(assertPublicDestination(new URL('https://rp.example/'), async () => [])).rejects.toThrow(/resolves to nothing/);
    const notFound = Object.assign(new Error('getaddrinfo ENOTFOUND rp.example'), { code: 'ENOTFOUND' });
    await expect(assertPublicDestination(new URL('https://rp.example/'), () => Promise.reject(notFound))).rejects.toThrow(/cannot resolve/);
  });
});

describe('createOutboundFetch', () => {
  let server: Server;
  let base: string;
  const seen: string[] = [];
  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      res.writeHead(200).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  test('a request to a local server that is not a registered back-channel URI never reaches it; the registered one does', async () => {
    const outbound = createOutboundFetch({ trusted: [`${base}/registered`] });
    // The library passes its own dispatcher; the refusal does not depend on it.
    await expect(outbound(`${base}/internal-admin`, { method: 'POST', body: 'a=b', dispatcher: undefined } as RequestInit)).rejects.toBeInstanceOf(OutboundRequestRefused);
    expect((await outbound(`${base}/registered`, { method: 'POST', body: 'logout_token=x', redirect: 'manual' })).status).toBe(200);
    // The registered request came after the refused one: had that one gone out, it would be listed first.
    expect(seen).toEqual(['POST /registered']);
  });

  test('a public destination goes out with redirects not followed and the library dispatcher kept', async () => {
    const sent: RequestInit[] = [];
    const dispatcher = { marker: true };
    const outbound = createOutboundFetch({
      trusted: [],
      resolve: async () => ['93.184.216.34'],
      fetch: (async (_input: string | URL | Request, init?: RequestInit) => {
        sent.push(init ?? {});
        return new Response(null, { status: 204 });
      }) as typeof fetch,
    });
    await outbound('https://rp.example/jwks', { method: 'GET', dispatcher } as RequestInit);
    expect(sent[0]).toMatchObject({ method: 'GET', redirect: 'manual', dispatcher });
  });
});

describe('the provider with a back-channel logout URI on 127.0.0.1', () => {
  let s: TestServer;
  let receiver: Awaited<ReturnType<typeof startLogoutReceiver>>;
  beforeAll(async () => {
    receiver = await startLogoutReceiver();
    s = await startTestServer({ tenants: tenantsWithBackchannel(receiver.uri) });
  });
  afterAll(async () => {
    await s?.close();
    await receiver?.close();
  });

  test('the registered URI still gets its logout token', async () => {
    const user = uniqueUser('bcl');
    const account = await s.app.services.accounts.create({ tenantId: 't1', userId: user.userId, devices: [{ email: user.email }] });
    const outcomes = await new BackchannelLogout(s.app.provider).notify(account.id, [{ clientId: 'rp-bcl', sid: 'sid-1' }]);
    expect(outcomes).toEqual([{ clientId: 'rp-bcl', ok: true }]);
    const token = decodeJwt(await receiver.nth(1));
    expect(token).toMatchObject({ sub: account.id, sid: 'sid-1', aud: 'rp-bcl' });
    expect(token.events).toHaveProperty([BACKCHANNEL_EVENT]);
  });
});
