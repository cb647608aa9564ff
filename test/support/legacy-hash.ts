import { randomBytes, scrypt } from 'node:crypto';

/**
 * A hash in the format stored before argon2id, `scrypt$N$r$p$salt$hash` (N = 2^15, r = 8, p = 1, base64url),
 * made the way it was made then: accounts created by older versions still carry such hashes.
 */
export function legacyScryptHash(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const [n, r, p] = [2 ** 15, 8, 1];
  return new Promise((resolve, reject) =>
    scrypt(secret.normalize('NFKC'), salt, 32, { N: n, r, p, maxmem: 64 * 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(['scrypt', n, r, p, salt.toString('base64url'), key.toString('base64url')].join('$')),
    ),
  );
}
