import type { LoginEventRepository, NewLoginEvent } from '../persistence/login-event.repository.js';

/** Results of a login attempt, as stored and shown in the login history. */
export const LOGIN_RESULTS = ['success', 'wrong_otp', 'expired_otp', 'used_otp', 'locked', 'unknown_user', 'not_activated', 'activation_failed', 'wrong_password', 'wrong_answer', 'no_certificate', 'wrong_certificate', 'expired_certificate', 'revoked_certificate', 'method_unavailable'] as const;
export type LoginResult = (typeof LOGIN_RESULTS)[number];

export class LoginEventService {
  constructor(private readonly repo: LoginEventRepository) {}

  record(event: Omit<NewLoginEvent, 'result'> & { result: LoginResult }) {
    return this.repo.record(event);
  }

  hasSucceededFrom(accountId: string, ip: string) {
    return this.repo.hasSucceededFrom(accountId, ip);
  }
}
