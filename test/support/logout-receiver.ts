import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseTenants } from '../../src/config/tenants.js';
import { REDIRECT_URI, TEST_TENANTS_YAML } from './harness.js';

export const BACKCHANNEL_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

/** A relying site's back-channel logout endpoint: keeps every logout token posted to it. */
export async function startLogoutReceiver() {
  const tokens: string[] = [];
  const waiters: Array<() => void> = [];
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const token = new URLSearchParams(body).get('logout_token');
      if (req.method === 'POST' && token) tokens.push(token);
      res.writeHead(token ? 200 : 400, { 'cache-control': 'no-store' }).end();
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    uri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/backchannel-logout`,
    tokens,
    /** Resolves with the (count)th token, waiting a little: end_session posts before redirecting, but be lenient. */
    async nth(count: number, timeoutMs = 5000): Promise<string> {
      const deadline = Date.now() + timeoutMs;
      while (tokens.length < count) {
        if (Date.now() > deadline) throw new Error(`expected ${count} logout token(s), got ${tokens.length}`);
        // Woken by the next token; the timer only bounds the wait.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      return tokens[count - 1]!;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Test tenants plus a site that registered a back-channel logout URI. */
export function tenantsWithBackchannel(uri: string, yaml = TEST_TENANTS_YAML) {
  const site = `      - { client_id: rp-bcl, client_secret: rp-bcl-secret-0123456789, name: 通知サイト, redirect_uris: ['${REDIRECT_URI}'], backchannel_logout_uri: '${uri}' }\n`;
  return parseTenants('t', yaml.replace('  - id: t2\n', `${site}  - id: t2\n`));
}
