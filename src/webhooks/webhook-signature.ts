import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'Anshin-Signature';
export const EVENT_ID_HEADER = 'Anshin-Event-Id';
export const EVENT_TYPE_HEADER = 'Anshin-Event-Type';
/** How old a signature a receiver should still accept (and our own verify's default). */
export const DEFAULT_TOLERANCE_SECONDS = 300;

/**
 * `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, keyed with the hook's secret (the whole
 * `whsec_…` string, as UTF-8), as Stripe signs its webhooks. The timestamp is signed too, so a
 * receiver that refuses old ones is safe from replays of a captured request. After a rotation the
 * previous secret signs too, for a while: `t=…,v1=<new>,v1=<previous>`, and a receiver accepts the
 * request when any v1 matches the secret it holds.
 */
export function signatureHeader(secrets: string | readonly string[], body: string, at: Date = new Date()): string {
  const t = Math.floor(at.getTime() / 1000);
  const keys = typeof secrets === 'string' ? [secrets] : secrets;
  return [`t=${t}`, ...keys.map((secret) => `v1=${hmac(secret, `${t}.${body}`)}`)].join(',');
}

/** What a receiver does: true when one v1 signature matches and the timestamp is within the tolerance. */
export function verifySignature(secret: string, body: string, header: string, opts: { toleranceSeconds?: number; now?: Date } = {}): boolean {
  const parts = header.split(',').map((p) => p.trim().split('='));
  const t = Number(parts.find(([k]) => k === 't')?.[1]);
  if (!Number.isInteger(t)) return false;
  const now = Math.floor((opts.now ?? new Date()).getTime() / 1000);
  if (Math.abs(now - t) > (opts.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS)) return false;
  const expected = Buffer.from(hmac(secret, `${t}.${body}`), 'hex');
  return parts.some(([k, v]) => {
    if (k !== 'v1' || !v || !/^[0-9a-f]{64}$/.test(v)) return false;
    return timingSafeEqual(Buffer.from(v, 'hex'), expected);
  });
}

function hmac(secret: string, text: string): string {
  return createHmac('sha256', secret).update(text, 'utf8').digest('hex');
}
