import type { AccountRole } from '../persistence/account.repository.js';

/** The changes staff make from an account's page. Each has a confirmation page (GET) and the change (POST, CSRF-checked). */
export const CONSOLE_ACTIONS = ['unlock', 'activation', 'end-sessions', 'revoke-certificate', 'login-method', 'delete'] as const;
export type ConsoleAction = (typeof CONSOLE_ACTIONS)[number];

/**
 * Who may do what. `admin` may do everything; `support` helps users back in (unlock, a new
 * activation, ending sessions, revoking a lost device's certificate, changing the login method) but
 * does not delete accounts, nor register or delete webhooks. Roles themselves are given through the
 * management API only, never in the console.
 */
export const ACTIONS_OF: Record<AccountRole, readonly ConsoleAction[]> = {
  support: ['unlock', 'activation', 'end-sessions', 'revoke-certificate', 'login-method'],
  admin: CONSOLE_ACTIONS,
};

export const mayDo = (role: AccountRole, action: ConsoleAction) => ACTIONS_OF[role].includes(action);
