import { Writable } from 'node:stream';
import { pino } from 'pino';
import { startTestServer, type TestServer } from '../support/harness.js';
import { discover, startLogin } from '../support/browser-less.js';

/** A logger whose JSON lines are kept for the test to read. */
function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'warn' }, sink), lines };
}

describe('server errors are logged', () => {
  let s: TestServer;
  const captured = capturingLogger();

  beforeAll(async () => {
    s = await startTestServer({ database: 'postgres', logger: captured.logger });
  });
  afterAll(async () => {
    await s?.close();
  });

  test("a failure of oidc-provider's storage is a logged 500, never the redirect the endpoint had prepared", async () => {
    const rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    // The provider's storage fails under it: the authorization endpoint cannot save the interaction.
    await s.db.prisma.$executeRawUnsafe('ALTER TABLE oidc_payloads RENAME TO oidc_payloads_gone');
    try {
      await expect(startLogin(rp, s.issuer)).rejects.toThrow(/got 500/);
    } finally {
      await s.db.prisma.$executeRawUnsafe('ALTER TABLE oidc_payloads_gone RENAME TO oidc_payloads');
    }
    // Logged where it surfaced: inside oidc-provider, or as the request's writes were stored at its end.
    const logged = captured.lines.find((l) => l.level === 50 && l.path === '/auth');
    expect(logged).toMatchObject({ level: 50, path: '/auth', method: 'GET' });
    expect(['oidc-provider server error', 'unhandled error']).toContain(logged!.msg);
    expect(JSON.stringify(logged!.err)).toMatch(/oidc_payloads/);
  });
});
