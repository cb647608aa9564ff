import type { Metrics } from '../http/metrics.js';
import type { LoginEventRepository, NewLoginEvent } from '../persistence/login-event.repository.js';
import type { WebhookEvents } from '../webhooks/webhook-events.js';

/** Results of a login attempt, as stored and shown in the login history. */
export const LOGIN_RESULTS = ['success', 'wrong_otp', 'expired_otp', 'used_otp', 'locked', 'unknown_user', 'not_activated', 'activation_failed', 'wrong_password', 'wrong_answer', 'no_certificate', 'wrong_certificate', 'expired_certificate', 'revoked_certificate', 'method_unavailable', 'wrong_passkey', 'cloned_passkey'] as const;
export type LoginResult = (typeof LOGIN_RESULTS)[number];

export class LoginEventService {
  constructor(
    private readonly repo: LoginEventRepository,
    private readonly metrics?: Pick<Metrics, 'login'>,
    /** login.succeeded / login.failed for the tenant's webhooks that opted in. */
    private readonly webhooks?: Pick<WebhookEvents, 'fromLoginEvent'>,
  ) {}

  async record(event: Omit<NewLoginEvent, 'result'> & { result: LoginResult }) {
    const recorded = await this.repo.record(event);
    this.metrics?.login(event.result, event.method);
    await this.webhooks?.fromLoginEvent(event);
    return recorded;
  }

  /**
   * Counts an event a repository inserted itself (the one-statement login completion); with `event`,
   * its webhook event goes out too.
   */
  async recordedElsewhere(result: LoginResult, method: string | null, event?: { tenantId: string; accountId: string; clientId: string | null; sourceIp: string | null }): Promise<void> {
    this.metrics?.login(result, method);
    if (event) await this.webhooks?.fromLoginEvent({ ...event, result, method });
  }
}
