import { BadRequestError } from '../../http/errors.js';
import { verifySecret } from '../../credentials/hashing.js';
import { PASSWORD_MAX_LENGTH } from '../../credentials/password-policy.js';
import type { AccountWithDevices } from '../../persistence/account.repository.js';
import type { Factor, FactorContext, FactorOutcome } from '../factor.js';

/** ID + password (memory-hard hash; wrong passwords count towards the same lockout as wrong codes). */
export class PasswordFactor implements Factor {
  readonly name = 'password' as const;
  readonly amr = 'pwd';

  isConfiguredFor(account: AccountWithDevices): boolean {
    return !!account.passwordHash;
  }

  async enter(): Promise<void> {}

  render(ctx: FactorContext) {
    return { view: 'login/password', locals: { userId: ctx.flow.submittedUserId } };
  }

  async submit(ctx: FactorContext, input: Record<string, unknown>): Promise<FactorOutcome> {
    const password = input.password;
    if (typeof password !== 'string' || password.length === 0) throw new BadRequestError('login:errors.password_required', {}, ctx.flowUrl);
    if (password.length > PASSWORD_MAX_LENGTH * 4) throw new BadRequestError('login:errors.password_required', {}, ctx.flowUrl);
    // Unknown and locked accounts are checked against nothing, with the same work.
    const ok = await verifySecret(password, ctx.live ? ctx.account?.passwordHash : null);
    return ok ? { kind: 'passed' } : { kind: 'rejected', result: 'wrong_password', countsAsFailure: true, messageKey: 'login:errors.auth_failed' };
  }
}
