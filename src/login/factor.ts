import type { ClientConfig, Tenant } from '../config/index.js';
import type { PresentedCertificate } from '../http/client-certificate.js';
import type { LimitCheck } from '../http/rate-limit.js';
import type { Locale } from '../i18n/index.js';
import type { AccountWithDevices } from '../persistence/account.repository.js';
import type { LoginFlow } from '../persistence/login-flow.repository.js';
import type { OneTimePassword } from '../persistence/one-time-password.repository.js';
import type { LoginResult } from '../history/login-event.service.js';
import type { FactorName } from './login-methods.js';

/** What a factor knows about the request and the login it belongs to. */
export interface FactorContext {
  flow: LoginFlow;
  /** null for an unknown user ID: factors then behave as for a real account but never succeed. */
  account: AccountWithDevices | null;
  /** Whether the account may receive messages and succeed (false for pending and locked accounts: a decoy step). */
  live: boolean;
  tenant: Tenant;
  client: ClientConfig;
  locale: Locale;
  ip: string | null;
  userAgent: string | null;
  /** URL of this login's current page, for "back" links. */
  flowUrl: string;
  /** The TLS client certificate sent with this request (mutual-TLS listener or trusted proxy), if any. */
  clientCertificate?: PresentedCertificate;
  /** The flow's newest login code when the request already loaded it with the flow (undefined: not loaded). */
  latestCode?: OneTimePassword | null;
}

export type FactorOutcome =
  | {
      kind: 'passed';
      /** A one-time code that passed: consumed by the statement that moves the flow on (only one submission wins). */
      codeId?: string;
      /** The RFC 8176 `amr` values this answer proved, when they depend on it (a passkey: `hwk` or `swk`, and `user`). */
      amr?: string[];
    }
  | {
      kind: 'rejected';
      result: LoginResult;
      /** Whether this attempt counts towards the account's lockout. */
      countsAsFailure: boolean;
      messageKey: string;
      messageParams?: Record<string, string | number>;
      /**
       * The answer may be one this flow already accepted (a used code): if the flow has moved past this
       * step, the submission is a duplicate (a double click) and gets the first one's outcome instead.
       */
      maybeDuplicate?: boolean;
    };

/** One step of a login method (like a Keycloak authenticator). */
export interface Factor {
  readonly name: FactorName;
  /**
   * RFC 8176 `amr` values this factor contributes. A factor whose values depend on the answer (a
   * passkey) names them in its outcome; these then stand for it only when it was passed at an earlier
   * step of the flow, where the answer is no longer at hand.
   */
  readonly amr: readonly string[];
  /** Whether a session's `amr` shows this factor proved (step-up); default: it holds all of `amr`. */
  provedIn?(sessionAmr: readonly string[]): boolean;
  /** Whether the account can pass this factor at all (checked when a client asks for more than the account's method). */
  isConfiguredFor(account: AccountWithDevices): boolean | Promise<boolean>;
  /** Runs when the flow reaches this step (e.g. mails the code), once `enterLimits` allowed it. */
  enter(ctx: FactorContext): Promise<void>;
  /** Rate limits counted before `enter` (e.g. codes mailed per user ID), together with the request's own. */
  enterLimits?(ctx: FactorContext): LimitCheck[];
  /** Factors that send something (a code) and can send it again: seconds until they may (0: now). */
  resendWait?(ctx: FactorContext): Promise<number>;
  /** Factors that mail a code: whether that mail was finally given up (the step then cannot succeed). */
  undelivered?(ctx: FactorContext): Promise<boolean>;
  /** The view and its locals for this step's page. */
  render(ctx: FactorContext): FactorPage | Promise<FactorPage>;
  submit(ctx: FactorContext, input: Record<string, unknown>): Promise<FactorOutcome>;
  /**
   * Factors whose answer names its account (a discoverable passkey), for a login without a user ID:
   * the ceremony's options for the user-ID page, and the account an answer claims to come from. That
   * claim is only a look-up: the answer is then checked by `submit` like any other.
   */
  discoverable?: {
    options(ctx: { flow: LoginFlow; tenant: Tenant }): Promise<unknown>;
    /** The account of this tenant the answer names, or the rejection for an answer naming none (its challenge spent). */
    claimedAccount(
      ctx: { flow: LoginFlow; tenant: Tenant; flowUrl: string },
      input: Record<string, unknown>,
    ): Promise<{ accountId: string } | { rejected: Extract<FactorOutcome, { kind: 'rejected' }> }>;
  };
}

export interface FactorPage {
  view: string;
  locals: Record<string, unknown>;
}

/** Whether a session's `amr` shows that `factor` was proved. */
export function provedInSession(factor: Pick<Factor, 'amr' | 'provedIn'>, amr: readonly string[]): boolean {
  return factor.provedIn ? factor.provedIn(amr) : factor.amr.every((v) => amr.includes(v));
}
