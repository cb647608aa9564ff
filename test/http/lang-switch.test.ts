import { request } from 'node:http';
import { startTestServer, type TestServer } from '../support/harness.js';

/** GETs a path exactly as written (fetch would normalise `/./` and `%2e` before sending). */
function rawGet(base: string, path: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, method: 'GET', headers: { accept: 'text/html', 'accept-language': 'ja' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const hrefOf = (html: string) => /<a class="lang-switch" href="([^"]*)"/.exec(html)?.[1]?.replaceAll('&amp;', '&');

describe('language switch link', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer();
  });
  afterAll(async () => {
    await s?.close();
  });

  test('on any page, whatever the path, it stays on this site', async () => {
    const paths = [
      '/.//evil.example/x',
      '/%2e//evil.example/x',
      '/%2E//evil.example/x?a=1',
      '//evil.example/x',
      '///evil.example/x',
      '/\\evil.example/x',
      '/.\\\\evil.example/x',
      '/%5cevil.example/x',
      '/%5C%5Cevil.example/x',
      '/./%2f/evil.example/x',
      '/nothing-here?lang=ja&x=1',
    ];
    for (const path of paths) {
      const res = await rawGet(s.issuer, path);
      expect([path, res.status]).toEqual([path, 404]);
      const href = hrefOf(res.body);
      expect([path, href]).toEqual([path, expect.any(String)]);
      // A single slash and then neither slash nor backslash, or relative to the page.
      expect([path, href]).toEqual([path, expect.stringMatching(/^(\/[^/\\]|\/$|\?|[^/\\:]*$)/)]);
      // Where a browser (which normalises the page's URL the same way) goes on a click: this site.
      const page = new URL(s.issuer.replace(/\/$/, '') + path);
      const target = new URL(href!, page);
      expect([path, target.origin]).toEqual([path, new URL(s.issuer).origin]);
      expect(target.searchParams.get('lang')).toBe('en');
    }
  });

  test('it keeps the page and its query, with the other language', async () => {
    const res = await rawGet(s.issuer, '/account/logged-out?x=1&lang=ja');
    const href = hrefOf(res.body)!;
    const target = new URL(href, new URL('/account/logged-out?x=1&lang=ja', s.issuer));
    expect(target.pathname).toBe('/account/logged-out');
    expect(Object.fromEntries(target.searchParams)).toEqual({ x: '1', lang: 'en' });
  });
});
