import { hash as argon2Hash, parseOptions } from '@node-rs/argon2';
import { describeError, upgradeWeakHash } from '../../src/credentials/hash-upgrade.js';
import { ARGON2_PARAMS, hashSecret, needsRehash, normalizeAnswer, verifySecret } from '../../src/credentials/hashing.js';
import { legacyScryptHash } from '../support/legacy-hash.js';

const PASSWORD = 'Ｐａｓｓ－ｗｏｒｄ 1'; // full width: NFKC makes it 'Pass-word 1'
// Made by the scrypt implementation this one replaces (same password; and the secret answer 'ポチ', normalised).
const OLD_PASSWORD_HASH = 'scrypt$32768$8$1$yIiVRU6sL79Bk02nE2-MCg$C9t8VvYVLrnba2IRwUJYwTZ9f_jD84OSZjZjhpmoOpU';
const OLD_ANSWER_HASH = 'scrypt$32768$8$1$nEbenSc8_dwFoIPlm_W9Tw$t3feCvNZXDGG34fEOB_2GAmz--sJW-N0BcXfvvBe_Fo';

describe('hashing of passwords and secret answers', () => {
  test('new hashes are argon2id PHC strings with m=19456 KiB, t=2, p=1, a 16-byte salt and a 32-byte hash', async () => {
    const stored = await hashSecret(PASSWORD);
    expect(stored).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
    expect(parseOptions(stored)).toMatchObject({ memoryCost: 19456, timeCost: 2, parallelism: 1, outputLen: 32, saltLen: 16 });
    expect(ARGON2_PARAMS).toEqual({ memoryCost: 19456, timeCost: 2, parallelism: 1 });
    // A fresh salt every time.
    expect(await hashSecret(PASSWORD)).not.toBe(stored);
  });

  test('verifies the right secret, NFKC-normalised, and refuses a wrong one', async () => {
    const stored = await hashSecret(PASSWORD);
    expect(await verifySecret(PASSWORD, stored)).toBe(true);
    expect(await verifySecret('Pass-word 1', stored)).toBe(true);
    expect(await verifySecret('Pass-word 2', stored)).toBe(false);
    expect(await verifySecret('pass-word 1', stored)).toBe(false);
    expect(await verifySecret('', stored)).toBe(false);
  });

  test('old scrypt hashes still verify, and are weaker than the current parameters', async () => {
    expect(await verifySecret(PASSWORD, OLD_PASSWORD_HASH)).toBe(true);
    expect(await verifySecret('Pass-word 1', OLD_PASSWORD_HASH)).toBe(true);
    expect(await verifySecret('Pass-word 2', OLD_PASSWORD_HASH)).toBe(false);
    expect(await verifySecret(normalizeAnswer('ﾎﾟﾁ '), OLD_ANSWER_HASH)).toBe(true);
    expect(await verifySecret(normalizeAnswer('タマ'), OLD_ANSWER_HASH)).toBe(false);
    const fresh = await legacyScryptHash('another secret');
    expect(await verifySecret('another secret', fresh)).toBe(true);
    for (const old of [OLD_PASSWORD_HASH, OLD_ANSWER_HASH, fresh]) expect(needsRehash(old)).toBe(true);
  });

  test('needsRehash: argon2id with lower memory or time cost (or argon2i) yes; current or stronger no', async () => {
    const normalized = PASSWORD.normalize('NFKC'); // as hashSecret stores it
    const lowMemory = await argon2Hash(normalized, { memoryCost: 4096, timeCost: 2, parallelism: 1 });
    const lowTime = await argon2Hash(normalized, { memoryCost: 19456, timeCost: 1, parallelism: 1 });
    const stronger = await argon2Hash(normalized, { memoryCost: 24576, timeCost: 3, parallelism: 1 });
    const argon2i = await argon2Hash(normalized, { memoryCost: 19456, timeCost: 2, parallelism: 1, algorithm: 1 });
    expect(needsRehash(lowMemory)).toBe(true);
    expect(needsRehash(lowTime)).toBe(true);
    expect(needsRehash(stronger)).toBe(false);
    expect(needsRehash(await hashSecret(PASSWORD))).toBe(false);
    // Weaker argon2id hashes still verify (they are upgraded after the check); other variants are not ours.
    expect(await verifySecret(PASSWORD, lowMemory)).toBe(true);
    expect(await verifySecret(PASSWORD, lowTime)).toBe(true);
    expect(await verifySecret(PASSWORD, stronger)).toBe(true);
    expect(await verifySecret(PASSWORD, argon2i)).toBe(false);
    // Nothing stored, nothing to upgrade.
    for (const none of [null, undefined, '', 'not-a-hash']) expect(needsRehash(none)).toBe(false);
  });

  test('malformed stored values verify as false, never throw', async () => {
    const good = await hashSecret(PASSWORD);
    const [, , , , salt, hash] = good.split('$');
    const malformed = [
      null,
      undefined,
      '',
      'plain text',
      '$argon2id$',
      '$argon2id$v=19$m=19456,t=2,p=1$',
      `$argon2id$v=19$m=abc,t=2,p=1$${salt}$${hash}`,
      `$argon2id$v=19$m=19456,t=2,p=1$${salt}$!!!!`,
      `$argon2id$v=19$m=19456,t=2,p=1$${salt}`,
      good.slice(0, -10),
      'scrypt$',
      'scrypt$32768$8$1$salt',
      'scrypt$abc$8$1$yIiVRU6sL79Bk02nE2-MCg$C9t8VvYVLrnba2IRwUJYwTZ9f_jD84OSZjZjhpmoOpU',
      'scrypt$1000$8$1$yIiVRU6sL79Bk02nE2-MCg$C9t8VvYVLrnba2IRwUJYwTZ9f_jD84OSZjZjhpmoOpU', // N not a power of two
      'scrypt$32768$8$1$yIiVRU6sL79Bk02nE2-MCg$',
      'scrypt$32768$8$1$yIiVRU6sL79Bk02nE2-MCg$C9t8VvYVLrnba2IRwUJYwTZ9f_jD84OSZjZjhpmoOpUxx',
    ];
    for (const stored of malformed) await expect(verifySecret(PASSWORD, stored)).resolves.toBe(false);
  });

  test('a missing hash costs about as much as a real check (no timing difference to tell it by)', async () => {
    const stored = await hashSecret(PASSWORD);
    await verifySecret(PASSWORD, null); // the decoy hash is made on first use
    const real: number[] = [];
    const missing: number[] = [];
    // CPU time of the process (the hashing runs on libuv's threads, which it includes), not the
    // clock: on a busy machine the clock also counts the time spent waiting for a core.
    const time = async (fn: () => Promise<unknown>) => {
      const before = process.cpuUsage();
      await fn();
      const used = process.cpuUsage(before);
      return used.user + used.system;
    };
    for (let i = 0; i < 9; i++) {
      real.push(await time(() => verifySecret('wrong password', stored)));
      missing.push(await time(() => verifySecret('wrong password', null)));
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[4]!;
    const ratio = median(missing) / median(real);
    expect(ratio).toBeGreaterThan(0.5);
    expect(ratio).toBeLessThan(2);
  });
});

describe('upgrade of a weak hash after a successful check', () => {
  test('a current hash is left alone: nothing is hashed or stored', async () => {
    let stored = 0;
    const store = async () => (stored++, true);
    expect(await upgradeWeakHash(PASSWORD, await hashSecret(PASSWORD), store, () => undefined)).toBe('current');
    expect(await upgradeWeakHash(PASSWORD, null, store, () => undefined)).toBe('current');
    expect(stored).toBe(0);
  });

  test('a scrypt hash is replaced by an argon2id hash of the same secret, compared against the value checked', async () => {
    const calls: Array<[string, string]> = [];
    const result = await upgradeWeakHash(PASSWORD, OLD_PASSWORD_HASH, async (current, upgraded) => (calls.push([current, upgraded]), true), () => undefined);
    expect(result).toBe('upgraded');
    expect(calls).toHaveLength(1);
    const [current, upgraded] = calls[0]!;
    expect(current).toBe(OLD_PASSWORD_HASH);
    expect(upgraded).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(await verifySecret(PASSWORD, upgraded)).toBe(true);
  });

  test('a stored value changed meanwhile is reported, and a failing store is logged without the hashes, never thrown', async () => {
    expect(await upgradeWeakHash(PASSWORD, OLD_PASSWORD_HASH, async () => false, () => undefined)).toBe('changed');
    const logged: unknown[] = [];
    const failure = Object.assign(new Error(`Invalid update\nwhere passwordHash = ${OLD_PASSWORD_HASH}`), { code: 'P2010' });
    const result = await upgradeWeakHash(PASSWORD, OLD_PASSWORD_HASH, async () => { throw failure; }, (e) => logged.push(e));
    expect(result).toBe('failed');
    expect(logged).toEqual([{ name: 'Error', code: 'P2010', message: 'Invalid update' }]);
    expect(JSON.stringify(logged)).not.toContain('scrypt');
    expect(describeError('boom')).toEqual({ name: 'string', message: '' });
  });
});
