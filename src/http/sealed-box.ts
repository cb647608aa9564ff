import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

/**
 * Encrypts small JSON values for a cookie (AES-256-GCM), for state between a form and its
 * confirmation that the browser must neither read nor alter (e.g. a pending secret answer's hash).
 * Keys derive from the cookie keys and a purpose, so one purpose's box never opens another's;
 * every key opens (rotation), the first one seals.
 */
export function sealedBox(cookieKeys: string[], purpose: string) {
  const keys = cookieKeys.map((k) => Buffer.from(hkdfSync('sha256', k, Buffer.alloc(0), `sealed-box:${purpose}`, 32)));
  if (!keys.length) throw new Error('sealedBox needs at least one key');

  return {
    seal(value: unknown): string {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', keys[0]!, iv);
      const body = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final()]);
      return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
    },
    /** The sealed value, or undefined when it was not sealed by us (tampered, other purpose, old key). */
    open(sealed: string | undefined): unknown {
      if (!sealed) return undefined;
      const raw = Buffer.from(sealed, 'base64url');
      if (raw.length < 29) return undefined;
      for (const key of keys) {
        try {
          const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
          decipher.setAuthTag(raw.subarray(12, 28));
          const text = Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
          return JSON.parse(text) as unknown;
        } catch {
          // Not this key; try the next.
        }
      }
      return undefined;
    },
  };
}
