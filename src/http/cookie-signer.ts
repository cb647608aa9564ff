import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Signs and checks cookie signatures for Koa and oidc-provider (both take it as their `keys`): the
 * interface of Keygrip (sign, verify, index) and its signatures (HMAC-SHA1 of `name=value` with the
 * first key, base64url), so cookies signed either way stay valid. Keygrip compares through tsscmp,
 * which draws a random key and computes two more HMACs for every check; Node's timingSafeEqual
 * compares the signatures in constant time on its own. Koa also builds a Keygrip for every request
 * when given an array of keys; one instance serves them all.
 */
export class CookieSigner {
  private readonly keys: readonly string[];

  constructor(keys: readonly string[]) {
    if (!keys.length || keys.some((k) => !k)) throw new Error('cookie keys must be non-empty strings');
    this.keys = [...keys];
  }

  /** The signature of `data` with the current (first) key. */
  sign(data: string): string {
    return signature(data, this.keys[0]!);
  }

  verify(data: string, digest: string): boolean {
    return this.index(data, digest) > -1;
  }

  /** Which key signed `data` (0 = current, more = an older one being rotated out), or -1. */
  index(data: string, digest: string): number {
    const given = Buffer.from(String(digest));
    for (let i = 0; i < this.keys.length; i++) {
      const expected = Buffer.from(signature(data, this.keys[i]!));
      if (expected.length === given.length && timingSafeEqual(expected, given)) return i;
    }
    return -1;
  }
}

function signature(data: string, key: string): string {
  return createHmac('sha1', key).update(data).digest('base64url');
}
