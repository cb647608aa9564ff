import { BadRequestError } from '../../http/errors.js';
import { upgradeWeakHash } from '../../credentials/hash-upgrade.js';
import { verifySecret } from '../../credentials/hashing.js';
import { PASSWORD_MAX_LENGTH } from '../../credentials/password-policy.js';
import type { Logger } from '../../logger.js';
import type { AccountRepository, AccountWithDevices } from '../../persistence/account.repository.js';
import type { Factor, FactorContext, FactorOutcome } from '../factor.js';

/** ID + password (memory-hard hash; wrong passwords count towards the same lockout as wrong codes). */
export class PasswordFactor implements Factor {
  readonly name = 'password' as const;
  readonly amr = ['pwd'];

  constructor(private readonly deps: { accounts: Pick<AccountRepository, 'upgradePasswordHash'>; logger: Pick<Logger, 'warn'> }) {}

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
    const stored = ctx.live ? ctx.account?.passwordHash : null;
    const ok = await verifySecret(password, stored);
    if (!ok) return { kind: 'rejected', result: 'wrong_password', countsAsFailure: true, messageKey: 'login:errors.auth_failed' };
    // A hash made with older (weaker) parameters is replaced now that the password is known to be right.
    const account = ctx.account;
    if (account)
      await upgradeWeakHash(
        password,
        stored,
        (current, upgraded) => this.deps.accounts.upgradePasswordHash(account.id, current, upgraded),
        (err) => this.deps.logger.warn({ accountId: account.id, error: err }, 'password hash upgrade failed'),
      );
    return { kind: 'passed' };
  }
}
