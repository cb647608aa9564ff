import { hashSecret, needsRehash } from './hashing.js';

export type HashUpgrade = 'current' | 'upgraded' | 'changed' | 'failed';

/**
 * After a successful check of `secret` against `stored`: when the stored hash is weaker than the current
 * parameters, hashes the secret afresh and hands it to `store`, which replaces the stored value only if it
 * is still `stored` (compare-and-set: a secret changed meanwhile stays). Never throws: the check has
 * already passed, so a failure here is logged through `onError` and the caller goes on.
 *
 * 'current': nothing to do; 'upgraded': stored; 'changed': the stored value had changed; 'failed': error.
 */
export async function upgradeWeakHash(
  secret: string,
  stored: string | null | undefined,
  store: (current: string, upgraded: string) => Promise<boolean>,
  onError: (err: ReturnType<typeof describeError>) => void,
): Promise<HashUpgrade> {
  if (!stored || !needsRehash(stored)) return 'current';
  try {
    return (await store(stored, await hashSecret(secret))) ? 'upgraded' : 'changed';
  } catch (err) {
    onError(describeError(err));
    return 'failed';
  }
}

/**
 * What may be logged of a failed upgrade: a database error's message can quote the statement's
 * arguments (the hashes), so only its name, code and first line.
 */
export function describeError(err: unknown): { name: string; code?: string; message: string } {
  if (!(err instanceof Error)) return { name: typeof err, message: '' };
  const code = (err as { code?: unknown }).code;
  return { name: err.name, ...(typeof code === 'string' ? { code } : {}), message: err.message.split('\n')[0]!.slice(0, 200) };
}
