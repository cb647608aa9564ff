// The housekeeping figures on /metrics: read from the housekeeper when scraped.
import { createPrometheusMetrics } from '../../src/http/metrics.js';

test('the housekeeping gauges show the purged rows per table, the runs and the last duration', async () => {
  const metrics = await createPrometheusMetrics();
  const before = await metrics.render();
  // Nothing is shown before a housekeeper reports.
  expect(before).not.toMatch(/^idp_housekeeping_purged_rows\{/m);
  let purged = { flows: 3, codes: 7, payloads: 11, loginEvents: 0 };
  metrics.readHousekeepingFrom(() => ({ runs: 2, skippedBecauseLocked: 1, lastDurationMs: 250, purged }));
  const text = await metrics.render();
  expect(text).toMatch(/^idp_housekeeping_purged_rows\{table="flows"\} 3$/m);
  expect(text).toMatch(/^idp_housekeeping_purged_rows\{table="payloads"\} 11$/m);
  expect(text).toMatch(/^idp_housekeeping_runs\{outcome="done"\} 2$/m);
  expect(text).toMatch(/^idp_housekeeping_runs\{outcome="skipped"\} 1$/m);
  expect(text).toMatch(/^idp_housekeeping_last_duration_seconds 0\.25$/m);
  // Read again at the next scrape.
  purged = { ...purged, codes: 9 };
  expect(await metrics.render()).toMatch(/^idp_housekeeping_purged_rows\{table="codes"\} 9$/m);
});
