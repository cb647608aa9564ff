import { randomBytes } from 'node:crypto';
import type { TestServer } from './harness.js';
import type { ReceivedMail } from './smtp.js';

/**
 * Proves what was not mailed, without a fixed wait: sends a marker to `address` through the
 * application's own queue (which takes jobs in order) and, once it arrives, returns every mail
 * received since message number `since`, before the marker.
 */
export async function mailedBeforeMarker(s: TestServer, address: string, since: number): Promise<ReceivedMail[]> {
  const marker = `marker-${randomBytes(6).toString('hex')}`;
  await s.app.services.mail.enqueue({ to: [address], template: 'account-unlocked', locale: 'en', params: { userId: marker } });
  const arrived = await s.smtp.waitFor((m) => m.to.includes(address) && m.text.includes(marker));
  return s.smtp.messages.slice(since, s.smtp.messages.indexOf(arrived));
}
