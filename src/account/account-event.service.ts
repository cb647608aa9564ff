import type { AccountEventRepository, NewAccountEvent } from '../persistence/account-event.repository.js';
import type { WebhookEvents } from '../webhooks/webhook-events.js';

/** Kinds of account change recorded in the audit trail (and mailed to the account's devices). */
export const ACCOUNT_EVENT_TYPES = [
  'created',
  'updated',
  'activation_issued',
  'activation_completed',
  'recovery_used',
  'password_reset',
  'unlocked',
  'session_signed_out',
  'signed_out_everywhere',
  'device_added',
  'device_changed',
  'device_verified',
  'device_deleted',
  'device_verify_failed',
  'secret_question_changed',
  'login_method_changed',
  'certificate_renewed',
  'passkey_registered',
  'passkey_renamed',
  'passkey_deleted',
] as const;
export type AccountEventType = (typeof ACCOUNT_EVENT_TYPES)[number];

export class AccountEventService {
  constructor(
    private readonly repo: AccountEventRepository,
    /** Webhook events for the changes that have one (unlock, activation, devices, login method). */
    private readonly webhooks?: Pick<WebhookEvents, 'fromAccountEvent'>,
  ) {}

  async record(event: Omit<NewAccountEvent, 'type'> & { type: AccountEventType }) {
    const recorded = await this.repo.record(event);
    await this.webhooks?.fromAccountEvent(event);
    return recorded;
  }

  list(accountId: string, opts?: { skip?: number; take?: number }) {
    return this.repo.listForAccount(accountId, opts);
  }
}
