import type { Contract, LoginMethod } from '../config/index.js';

export type FactorName = 'password' | 'email_otp' | 'client_certificate';

/** The ordered factors each login method requires. */
export const METHOD_FACTORS: Record<LoginMethod, FactorName[]> = {
  otp: ['email_otp'],
  password: ['password'],
  password_otp: ['password', 'email_otp'],
  password_certificate: ['password', 'client_certificate'],
};

/** `acr` value a completed login method asserts in the ID token. */
export const METHOD_ACR: Record<LoginMethod, string> = {
  otp: 'urn:anshin-login:acr:otp',
  password: 'urn:anshin-login:acr:password',
  password_otp: 'urn:anshin-login:acr:password-otp',
  password_certificate: 'urn:anshin-login:acr:password-certificate',
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
