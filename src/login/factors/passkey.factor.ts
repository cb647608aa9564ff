import { BadRequestError } from '../../http/errors.js';
import type { AccountWithDevices } from '../../persistence/account.repository.js';
import { PASSKEY_AMR_VALUES, type AssertionResult, type PasskeyService } from '../../passkey/passkey.service.js';
import type { Factor, FactorContext, FactorOutcome } from '../factor.js';

type Rejection = Extract<FactorOutcome, { kind: 'rejected' }>;

/** Wrong answers: guesses (or a clone) count towards the lockout like wrong codes. */
const REJECTIONS: Record<Exclude<Extract<AssertionResult, { ok: false }>['reason'], 'challenge'>, Rejection> = {
  unknown_credential: { kind: 'rejected', result: 'wrong_passkey', countsAsFailure: true, messageKey: 'login:passkey.errors.not_registered' },
  other_account: { kind: 'rejected', result: 'wrong_passkey', countsAsFailure: true, messageKey: 'login:passkey.errors.not_registered' },
  invalid: { kind: 'rejected', result: 'wrong_passkey', countsAsFailure: true, messageKey: 'login:passkey.errors.invalid' },
  counter_regression: { kind: 'rejected', result: 'cloned_passkey', countsAsFailure: true, messageKey: 'login:passkey.errors.cloned' },
};

/** The JSON of options for a `<script type="application/json">` data block: `<` escaped, so no `</script>` ends it. */
export function optionsJson(options: unknown): string {
  return JSON.stringify(options).replace(/</g, '\\u003c');
}

/**
 * A passkey (WebAuthn assertion with user verification), through PasskeyService. The page carries
 * options for the flow's account, with a single-use challenge bound to the interaction; unknown IDs
 * and accounts without a passkey get the service's stand-in options, so the page does not tell
 * whether the ID exists. Also a discoverable login from the user-ID page, where the passkey
 * names its account.
 */
export class PasskeyFactor implements Factor {
  readonly name = 'passkey' as const;
  /**
   * What a passkey answer proves is in its outcome (`hwk` for a device-bound key, `swk` for a synced
   * one, and `user`: verification is always required). These stand only for a passkey passed at an
   * earlier step of the flow (a login without a user ID of otp_passkey): `swk`, which does not claim
   * hardware it did not see, and `user`.
   */
  readonly amr = ['swk', 'user'];

  /**
   * A session proved a passkey when its amr has a key (`hwk`/`swk`) and `user`: a client certificate
   * alone asserts `swk` too, but never `user`.
   */
  provedIn(sessionAmr: readonly string[]): boolean {
    return sessionAmr.includes('user') && PASSKEY_AMR_VALUES.some((v) => sessionAmr.includes(v));
  }

  constructor(private readonly deps: { passkeys: PasskeyService }) {}

  isConfiguredFor(account: AccountWithDevices): Promise<boolean> {
    return this.deps.passkeys.hasPasskey(account.id);
  }

  async enter(): Promise<void> {}

  async render(ctx: FactorContext) {
    const userId = ctx.flow.submittedUserId ?? '';
    // Locked and pending accounts get their own passkeys too, as live ones do (the page looks the
    // same): the owner's answer then reaches the flow, which says why it cannot sign in (the lock and
    // its time left, or activation), instead of the browser failing on a stand-in it has no key for.
    const options = await this.deps.passkeys.authenticationOptions(ctx.flow.interactionUid, {
      tenantId: ctx.tenant.id,
      userId,
      accountId: ctx.account?.id ?? null,
    });
    return { view: 'login/passkey', locals: { userId, passkeyOptions: optionsJson(options) } };
  }

  async submit(ctx: FactorContext, input: Record<string, unknown>): Promise<FactorOutcome> {
    const raw = input.response;
    if (typeof raw !== 'string' || raw.length === 0) throw new BadRequestError('passkey:errors.invalid_response', {}, ctx.flowUrl);
    // Unknown, pending and locked accounts never pass (the flow decides what to show for them).
    if (!ctx.account || !ctx.live) return REJECTIONS.unknown_credential;
    const r = await this.deps.passkeys.verifyAssertion(ctx.flow.interactionUid, raw, { tenantId: ctx.tenant.id, accountId: ctx.account.id }, ctx.flowUrl);
    if (r.ok) return { kind: 'passed', amr: r.amr };
    // An expired or spent challenge (a page left open, a reload in another tab) is no guess: try again.
    if (r.reason === 'challenge') throw new BadRequestError('passkey:errors.challenge', {}, ctx.flowUrl);
    return REJECTIONS[r.reason];
  }

  readonly discoverable: NonNullable<Factor['discoverable']> = {
    options: ({ flow }) => this.deps.passkeys.authenticationOptions(flow.interactionUid),
    claimedAccount: async ({ flow, tenant, flowUrl }, input) => {
      const raw = input.response;
      if (typeof raw !== 'string' || raw.length === 0) throw new BadRequestError('passkey:errors.invalid_response', {}, flowUrl);
      const owner = await this.deps.passkeys.claimedOwner(raw, flowUrl);
      if (owner && owner.tenantId === tenant.id) return { accountId: owner.accountId };
      // No passkey of this tenant: its challenge is spent all the same (no retry with it), and another
      // tenant's passkey says nothing about that tenant's accounts.
      const r = await this.deps.passkeys.verifyAssertion(flow.interactionUid, raw, { tenantId: tenant.id, accountId: null }, flowUrl);
      if (!r.ok && r.reason === 'challenge') throw new BadRequestError('passkey:errors.challenge', {}, flowUrl);
      return { rejected: { ...REJECTIONS.unknown_credential, messageKey: 'login:passkey.errors.unknown' } };
    },
  };
}
