import { createHmac } from 'node:crypto';
import type { Contract, LoginMethod } from '../config/index.js';

export type FactorName = 'password' | 'email_otp' | 'client_certificate' | 'passkey';

/** The ordered factors each login method requires. */
export const METHOD_FACTORS: Record<LoginMethod, FactorName[]> = {
  otp: ['email_otp'],
  password: ['password'],
  password_otp: ['password', 'email_otp'],
  password_certificate: ['password', 'client_certificate'],
  passkey: ['passkey'],
  otp_passkey: ['email_otp', 'passkey'],
};

/** `acr` value a completed login method asserts in the ID token. */
export const METHOD_ACR: Record<LoginMethod, string> = {
  otp: 'urn:anshin-login:acr:otp',
  password: 'urn:anshin-login:acr:password',
  password_otp: 'urn:anshin-login:acr:password-otp',
  password_certificate: 'urn:anshin-login:acr:password-certificate',
  passkey: 'urn:anshin-login:acr:passkey',
  otp_passkey: 'urn:anshin-login:acr:otp-passkey',
};

export const ACR_VALUES = Object.values(METHOD_ACR);

/**
 * The method an account signs in with: its own, when its tenant's contract still allows it;
 * otherwise the contract's first (default) method.
 */
export function effectiveMethod(accountMethod: string, contract: Contract): LoginMethod {
  const allowed = contract.login_methods;
  return (allowed as string[]).includes(accountMethod) ? (accountMethod as LoginMethod) : (allowed[0] ?? 'otp');
}

/**
 * The method an unknown user ID appears to have: one of the contract's methods,
 * picked by an HMAC of tenant and ID under a server secret. The same ID always gets the same page,
 * and unknown IDs spread over the allowed methods instead of all showing the first, so neither
 * repeating nor comparing tells them from accounts.
 */
export function decoyMethod(secret: string, tenantId: string, userId: string, contract: Contract): LoginMethod {
  const allowed = contract.login_methods;
  if (allowed.length <= 1) return allowed[0] ?? 'otp';
  const digest = createHmac('sha256', secret).update(`login-method-decoy\0${tenantId}\0${userId}`).digest();
  return allowed[digest.readUInt32BE(0) % allowed.length]!;
}

/**
 * Strength order of the methods, weakest first, for step-up: a session whose method ranks at least
 * as high as the one a client asks for satisfies it. A passkey (phishing-resistant, user verified)
 * ranks above password + certificate; the mailed code and a passkey together rank highest.
 */
export const METHOD_STRENGTH: LoginMethod[] = ['otp', 'password', 'password_otp', 'password_certificate', 'passkey', 'otp_passkey'];

/** Methods with a passkey step: offered once the account has a passkey, or at activation. */
export const PASSKEY_METHODS: readonly LoginMethod[] = ['passkey', 'otp_passkey'];

export function methodOfAcr(acr: string | undefined): LoginMethod | undefined {
  return (Object.keys(METHOD_ACR) as LoginMethod[]).find((m) => METHOD_ACR[m] === acr);
}

const strength = (m: LoginMethod) => METHOD_STRENGTH.indexOf(m);

export function isAtLeast(method: LoginMethod, required: LoginMethod): boolean {
  return strength(method) >= strength(required);
}

/**
 * The weakest method satisfying an `acr_values` request (space-separated, our acr values; others
 * ignored), or undefined when nothing we know is asked for. Any listed acr is acceptable, so the
 * weakest one is the bar.
 */
export function requiredMethod(acrValues: string | undefined): LoginMethod | undefined {
  const methods = (acrValues ?? '')
    .split(' ')
    .map((v) => methodOfAcr(v))
    .filter((m): m is LoginMethod => !!m);
  return methods.sort((a, b) => strength(a) - strength(b))[0];
}

/** The stronger of two methods. */
export function strongerMethod(a: LoginMethod, b: LoginMethod | undefined): LoginMethod {
  return b && strength(b) > strength(a) ? b : a;
}
