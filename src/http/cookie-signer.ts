import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { setBounded } from '../bounded-map.js';

/**
 * Signs and checks cookie signatures for Koa and oidc-provider (both take it as their `keys`): the
 * interface of Keygrip (sign, verify, index) and its signatures (HMAC-SHA1 of `name=value` with the
 * first key, base64url), so cookies signed either way stay valid. Keygrip compares through tsscmp,
 * which draws a random key and computes two more HMACs for every check; Node's timingSafeEqual
 * compares the signatures in constant time on its own. Koa also builds a Keygrip for every request
 * when given an array of keys; one instance serves them all.
 *
 * The same cookies come back with every request of a login, so signatures found valid are remembered
 * (by value and signature; at most REMEMBERED_MAX, the oldest forgotten first): a valid pair stays valid
 * for the life of the keys. Only valid pairs are kept, which no one can make without a key. What this
 * process signs is remembered as valid at once (the browser sends it back with the next request), and
 * its signature too: a login sets the same values again and again (the deletions of its
 * interaction cookies, `name=`), each of which cost an HMAC.
 */
export class CookieSigner {
  private readonly keys: readonly KeyObject[];
  private readonly verified = new Map<string, number>();
  private readonly signed = new Map<string, string>();

  constructor(keys: readonly string[]) {
    if (!keys.length || keys.some((k) => !k)) throw new Error('cookie keys must be non-empty strings');
    // Imported once: an HMAC keyed with a string imports the key again every time.
    this.keys = keys.map((k) => createSecretKey(Buffer.from(k, 'utf8')));
  }

  /** The signature of `data` with the current (first) key. */
  sign(data: string): string {
    let sig = this.signed.get(data);
    if (sig === undefined) {
      sig = signature(data, this.keys[0]!);
      setBounded(this.signed, data, sig, REMEMBERED_MAX);
      setBounded(this.verified, pairKey(data, sig), 0, REMEMBERED_MAX);
    }
    return sig;
  }

  verify(data: string, digest: string): boolean {
    return this.index(data, digest) > -1;
  }

  /** Which key signed `data` (0 = current, more = an older one being rotated out), or -1. */
  index(data: string, digest: string): number {
    const remembered = pairKey(data, digest);
    const known = this.verified.get(remembered);
    if (known !== undefined) return known;
    const given = Buffer.from(String(digest));
    for (let i = 0; i < this.keys.length; i++) {
      const expected = Buffer.from(signature(data, this.keys[i]!));
      if (expected.length === given.length && timingSafeEqual(expected, given)) {
        setBounded(this.verified, remembered, i, REMEMBERED_MAX);
        return i;
      }
    }
    return -1;
  }
}

/** Valid (value, signature) pairs, and signatures made, remembered: about 100 bytes each. */
const REMEMBERED_MAX = 10_000;

/** Length-prefixed: no other (value, signature) pair spells the same key. */
function pairKey(data: string, digest: string): string {
  return `${String(digest).length}:${digest}${data}`;
}

function signature(data: string, key: KeyObject): string {
  return createHmac('sha1', key).update(data).digest('base64url');
}
