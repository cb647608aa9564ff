import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
// Mozilla's list of the most common passwords (from the 10-million-password corpus), bundled in npm.
const commonList = require('fxa-common-password-list') as { test(password: string): boolean };

export const PASSWORD_MAX_LENGTH = 128;

export type PasswordProblem = 'too_short' | 'too_long' | 'common' | 'contains_user_id' | 'mismatch';

/**
 * NIST SP 800-63B rules: a minimum length, a generous maximum, no composition rules, and no password
 * found in a list of commonly used ones (or containing the user ID).
 */
export function checkPassword(password: string, confirm: string, opts: { minLength: number; userId: string }): PasswordProblem | undefined {
  const normalized = password.normalize('NFKC');
  if ([...normalized].length < opts.minLength) return 'too_short';
  if ([...normalized].length > PASSWORD_MAX_LENGTH) return 'too_long';
  if (password !== confirm) return 'mismatch';
  if (commonList.test(normalized) || commonList.test(normalized.toLowerCase())) return 'common';
  if (opts.userId.length >= 4 && normalized.toLowerCase().includes(opts.userId.toLowerCase())) return 'contains_user_id';
  return undefined;
}
