import { z } from 'zod';

/** RFC 5321's limit on a forward path; also the longest address any form or API accepts. */
export const EMAIL_ADDRESS_MAX_LENGTH = 254;

// HTML's "valid e-mail address" (what browsers check for type=email), with a dot in the domain:
// ASCII atext in the local part, LDH labels in the domain. No commas, quotes, angle brackets or
// spaces, so an address is always one recipient that every mail transport and page can carry.
const ADDRESS = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;

/** The rule's pattern, for the API's OpenAPI document. */
export const EMAIL_ADDRESS_PATTERN = ADDRESS.source;

/**
 * The one rule for e-mail addresses, shared by the management API, the admin CLI, the account area
 * and the mail layer, so nothing is stored that the mail layer later refuses. Expects a trimmed value.
 */
export function isEmailAddress(value: string): boolean {
  return value.length <= EMAIL_ADDRESS_MAX_LENGTH && ADDRESS.test(value);
}

/** The rule as a zod schema (trims first); its issue carries the i18n key of the API's field message. */
export const emailAddressSchema = z
  .string()
  .trim()
  .refine(isEmailAddress, { message: 'not an e-mail address', params: { messageKey: 'account:errors.bad_email' } });
