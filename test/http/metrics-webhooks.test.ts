// The webhook backlog on /metrics: deliveries waiting and the age of the oldest, deliveries given up,
// hooks turned off, all read from the delivery queue when scraped.
import { startTestServer, type TestServer } from '../support/harness.js';
import { waitUntil } from '../mail/mail-store.js';

const TOKEN = 'metrics-token-0123456789abcdef';

function sample(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

describe('/metrics: the webhook delivery queue', () => {
  let s: TestServer;
  beforeAll(async () => {
    // A receiver that refuses connections (port 9 on loopback), and a first retry a minute later:
    // the delivery stays pending while the test looks.
    s = await startTestServer({ database: 'pglite', env: { METRICS_TOKEN: TOKEN, WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true', WEBHOOK_RETRY_BASE: '60', WEBHOOK_POLL_INTERVAL: '0.1' } });
  });
  afterAll(() => s?.close());

  const scrape = async () => {
    const res = await fetch(new URL('/metrics', s.issuer), { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(res.status).toBe(200);
    return res.text();
  };

  const scrapeUntil = (ok: (text: string) => boolean): Promise<string> =>
    waitUntil(async () => {
      const text = await scrape();
      return ok(text) ? text : undefined;
    }, 'the webhook metrics to match');

  test('a delivery waiting for its retry, one given up and a hook turned off are shown', async () => {
    const empty = await scrape();
    expect(sample(empty, 'idp_webhook_queue_depth')).toBe(0);
    expect(sample(empty, 'idp_webhook_oldest_pending_seconds')).toBe(0);
    expect(sample(empty, 'idp_webhook_deliveries_given_up')).toBe(0);
    expect(sample(empty, 'idp_webhooks_disabled')).toBe(0);

    const { webhooks } = s.app.services;
    const { hook } = await webhooks.register('t1', { url: 'http://127.0.0.1:9/hook' }, null);
    const queued = await webhooks.test('t1', hook.id);
    // The first attempt fails (connection refused); the retry is a minute away.
    const waiting = await scrapeUntil((t) => sample(t, 'idp_webhook_queue_depth') === 1 && (sample(t, 'idp_webhook_oldest_pending_seconds') ?? 0) > 0);
    expect(sample(waiting, 'idp_webhook_deliveries_given_up')).toBe(0);
    const tried = await s.db.prisma.webhookDelivery.findUniqueOrThrow({ where: { id: queued.id } });
    expect(tried.status).toBe('pending');

    // As the worker records a delivery it gives up.
    await s.db.prisma.webhookDelivery.update({ where: { id: queued.id }, data: { status: 'failed', failedAt: new Date() } });
    const given = await scrape();
    expect(sample(given, 'idp_webhook_deliveries_given_up')).toBe(1);
    expect(sample(given, 'idp_webhook_queue_depth')).toBe(0);
    expect(sample(given, 'idp_webhook_oldest_pending_seconds')).toBe(0);

    // An event waiting for its retry when the hook is turned off: the hook is counted, and its event
    // leaves the backlog (it waits for the hook to be turned on).
    await s.app.services.webhookEvents.emit('t1', 'account.deleted', { userId: 'metrics-user' });
    await scrapeUntil((t) => sample(t, 'idp_webhook_queue_depth') === 1);
    await webhooks.update('t1', hook.id, { enabled: false });
    const off = await scrape();
    expect(sample(off, 'idp_webhooks_disabled')).toBe(1);
    expect(sample(off, 'idp_webhook_queue_depth')).toBe(0);
  });
});
