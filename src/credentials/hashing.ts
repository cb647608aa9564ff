import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { hash as argon2Hash, parseOptions, verify as argon2Verify, type Algorithm, type Options, type Version } from '@node-rs/argon2';

/**
 * Memory-hard hashing of passwords and secret answers: argon2id at OWASP's minimum parameters
 * (m = 19 MiB, t = 2, p = 1), stored as the standard PHC string `$argon2id$v=19$m=19456,t=2,p=1$salt$hash`.
 * The library runs it on libuv's thread pool, so the event loop stays free.
 *
 * Hashes made before argon2id (`scrypt$N$r$p$salt$hash`) still verify; `needsRehash` tells that they
 * (and argon2id hashes with lower costs) are to be replaced by a fresh hash after the next successful check.
 */

// The library's enums are `const enum`s (no runtime object): their values, typed.
const ARGON2ID = 2 as Algorithm;
const V0x13 = 1 as Version;

/** Current parameters: OWASP Password Storage Cheat Sheet's minimum for argon2id. */
export const ARGON2_PARAMS = { memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;
const OUTPUT_LEN = 32;
const SALT_LEN = 16;
const OPTIONS: Options = { ...ARGON2_PARAMS, outputLen: OUTPUT_LEN, algorithm: ARGON2ID, version: V0x13 };
const ARGON2ID_PREFIX = '$argon2id$';

// Legacy scrypt: 128 * N * r bytes = 32 MiB at N = 2^15, r = 8; Node's default maxmem (32 MiB) is just short of it.
const SCRYPT_PREFIX = 'scrypt$';
const SCRYPT_MAXMEM = 64 * 1024 * 1024;

function scryptDerive(secret: string, salt: Buffer, n: number, r: number, p: number, keylen: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(secret, salt, keylen, { N: n, r, p, maxmem: SCRYPT_MAXMEM }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

let dummy: Promise<string> | undefined;
/** An argon2id hash (current parameters) of a random secret nobody knows: the work done when there is no hash. */
function dummyHash(): Promise<string> {
  dummy ??= argon2Hash(randomBytes(32).toString('base64url'), OPTIONS).catch((err: unknown) => {
    dummy = undefined; // made again next time rather than failing every later check
    throw err;
  });
  return dummy;
}

/** Same work as checking a real hash, so timing doesn't tell whether one exists. */
async function decoy(secret: string): Promise<false> {
  await argon2Verify(await dummyHash(), secret);
  return false;
}

export async function hashSecret(secret: string): Promise<string> {
  return argon2Hash(secret.normalize('NFKC'), OPTIONS);
}

export async function verifySecret(secret: string, stored: string | null | undefined): Promise<boolean> {
  const normalized = secret.normalize('NFKC');
  if (stored?.startsWith(ARGON2ID_PREFIX)) {
    try {
      parseOptions(stored);
    } catch {
      return decoy(normalized);
    }
    try {
      return await argon2Verify(stored, normalized);
    } catch {
      return false;
    }
  }
  if (stored?.startsWith(SCRYPT_PREFIX)) return verifyScrypt(normalized, stored);
  return decoy(normalized);
}

async function verifyScrypt(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6) return decoy(secret);
  const [, n, r, p, salt, hash] = parts as [string, string, string, string, string, string];
  const expected = Buffer.from(hash, 'base64url');
  if (expected.length < 16 || ![n, r, p].every((v) => /^[1-9]\d{0,9}$/.test(v))) return decoy(secret);
  try {
    const key = await scryptDerive(secret, Buffer.from(salt, 'base64url'), Number(n), Number(r), Number(p), expected.length);
    return key.length === expected.length && timingSafeEqual(key, expected);
  } catch {
    // Parameters scrypt refuses (N not a power of two, too much memory): nothing verifies against them.
    return false;
  }
}

/**
 * Whether a stored hash is weaker than the current parameters: any scrypt hash, or an argon2id hash with
 * lower memory or time cost (or an older version, a shorter output or salt). Missing values, values of
 * no known scheme and unreadable argon2id strings can never pass a check, so nothing to upgrade: false.
 */
export function needsRehash(stored: string | null | undefined): boolean {
  if (!stored) return false;
  if (stored.startsWith(SCRYPT_PREFIX)) return true;
  if (!stored.startsWith(ARGON2ID_PREFIX)) return false;
  try {
    const o = parseOptions(stored);
    return (
      o.version !== V0x13 ||
      o.memoryCost < ARGON2_PARAMS.memoryCost ||
      o.timeCost < ARGON2_PARAMS.timeCost ||
      o.outputLen < OUTPUT_LEN ||
      o.saltLen < SALT_LEN
    );
  } catch {
    return false;
  }
}

/** Secret answers are compared loosely: NFKC (full/half width), trimmed, inner spaces collapsed, case-folded. */
export function normalizeAnswer(answer: string): string {
  return answer.normalize('NFKC').trim().replace(/\s+/g, ' ').toLowerCase();
}
