// Every request has an id: taken from a sane X-Request-Id or generated, sent back, written in the
// request's log line, shown on error pages and in JSON errors, and carried by server-error logs.
import { Writable } from 'node:stream';
import * as oidc from 'openid-client';
import { pino } from 'pino';
import { newRequestId } from '../../src/http/request-id.js';
import { REDIRECT_URI, startTestServer, type TestServer } from '../support/harness.js';
import { discover, startLogin } from '../support/browser-less.js';
import { waitUntil } from '../mail/mail-store.js';

type Line = Record<string, unknown>;

/** A logger whose JSON lines are kept for the test to read. */
function capturingLogger() {
  const lines: Line[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Line);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

const GENERATED = /^[A-Za-z0-9_-]{16}$/;

test('generated ids stay well-formed and distinct across refills of their random pool', () => {
  const ids = Array.from({ length: 2000 }, () => newRequestId());
  for (const id of ids) expect(id).toMatch(GENERATED);
  expect(new Set(ids).size).toBe(ids.length);
});

describe('request ids', () => {
  let s: TestServer;
  const captured = capturingLogger();
  beforeAll(async () => {
    s = await startTestServer({ logger: captured.logger });
  });
  afterAll(() => s?.close());

  const at = (path: string) => new URL(path, s.issuer);
  /** The request's log line; it is written as the response leaves, so it may trail the response a little. */
  function logLine(requestId: string): Promise<Line> {
    return waitUntil(() => captured.lines.find((l) => l.requestId === requestId && l.msg === 'request'), `a request log line with ${requestId}`, 5000);
  }

  test('a sane incoming id is echoed and logged with method, route, status, duration and client IP', async () => {
    const id = 'lb-Trace_01.abc';
    const res = await fetch(at('/.well-known/openid-configuration'), { headers: { 'x-request-id': id } });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe(id);
    const line = await logLine(id);
    expect(line).toMatchObject({ level: 30, method: 'GET', route: 'discovery', status: 200, ip: '127.0.0.1' });
    expect(typeof line.ms).toBe('number');
  });

  test('an id is generated when none comes, and replaces a malformed one', async () => {
    const plain = await fetch(at('/.well-known/openid-configuration'));
    const generated = plain.headers.get('x-request-id')!;
    expect(generated).toMatch(GENERATED);
    await logLine(generated);

    for (const bad of ['has space', 'x'.repeat(129), '<script>', 'ünïcode', 'a/b', 'id"quote']) {
      const res = await fetch(at('/health/live'), { headers: { 'x-request-id': bad } });
      const got = res.headers.get('x-request-id');
      expect(got).toMatch(GENERATED);
      expect(got).not.toBe(bad);
    }
    const longest = 'y'.repeat(128);
    expect((await fetch(at('/health/live'), { headers: { 'x-request-id': longest } })).headers.get('x-request-id')).toBe(longest);
  });

  test('probes are not logged at info', async () => {
    const id = 'probe-check-1';
    expect((await fetch(at('/health/ready'), { headers: { 'x-request-id': id } })).status).toBe(200);
    // A later request's line is written after the probe's would have been.
    const after = 'after-probe-1';
    await fetch(at('/jwks'), { headers: { 'x-request-id': after } });
    await logLine(after);
    expect(captured.lines.some((l) => l.requestId === id)).toBe(false);
  });

  test('error pages show the id (ours and oidc-provider\'s), JSON and problem+json errors carry it', async () => {
    const notFound = await fetch(at('/no/such/page'), { headers: { accept: 'text/html', 'accept-language': 'ja', 'x-request-id': 'page-404-id' } });
    expect(notFound.status).toBe(404);
    const html = await notFound.text();
    expect(html).toContain('お問い合わせ番号');
    expect(html).toContain('page-404-id');
    expect(await logLine('page-404-id')).toMatchObject({ status: 404, route: 'unmatched' });

    const en = await (await fetch(at('/no/such/page'), { headers: { accept: 'text/html', 'accept-language': 'en', 'x-request-id': 'page-404-en' } })).text();
    expect(en).toMatch(/Reference: <code>page-404-en<\/code>/);

    // oidc-provider's own error page: an unknown client.
    const authUrl = `/auth?client_id=no-such-client&response_type=code&scope=openid&redirect_uri=${encodeURIComponent(REDIRECT_URI)}`;
    const oidcError = await fetch(at(authUrl), { headers: { accept: 'text/html', 'x-request-id': 'oidc-error-id' } });
    expect(oidcError.status).toBe(400);
    expect(await oidcError.text()).toContain('oidc-error-id');

    const json = await fetch(at('/no/such/page'), { headers: { accept: 'application/json', 'x-request-id': 'json-404-id' } });
    expect(await json.json()).toMatchObject({ error: 'not_found', request_id: 'json-404-id' });

    const problem = await fetch(at('/api/v1/accounts'), { headers: { 'x-request-id': 'api-401-id' } });
    expect(problem.status).toBe(401);
    expect(problem.headers.get('content-type')).toContain('application/problem+json');
    expect(await problem.json()).toMatchObject({ status: 401, request_id: 'api-401-id' });
  });

  test('a server error: the page shows the id, and the error log line carries the same id', async () => {
    const rp: oidc.Configuration = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const login = await startLogin(rp, s.issuer);
    // The login's storage fails under it: the interaction page cannot load its flow.
    await s.db.sql.query('ALTER TABLE login_flows RENAME TO login_flows_gone');
    let res: Response;
    try {
      res = await login.agent.get(login.interactionPath);
    } finally {
      await s.db.sql.query('ALTER TABLE login_flows_gone RENAME TO login_flows');
    }
    expect(res.status).toBe(500);
    const id = res.headers.get('x-request-id')!;
    expect(id).toMatch(GENERATED);
    const html = await res.text();
    expect(html).toContain(id);
    expect(html).not.toContain('login_flows');
    const error = captured.lines.find((l) => l.msg === 'unhandled error' && l.requestId === id);
    expect(error).toMatchObject({ level: 50, method: 'GET', path: login.interactionPath });
    expect(JSON.stringify(error!.err)).toMatch(/login_flows/);
    expect(await logLine(id)).toMatchObject({ status: 500, route: '/interaction/:uid', level: 30 });
  });
});
