import { createHmac, randomInt, randomUUID, timingSafeEqual } from 'node:crypto';
import type { ClaimedInsert } from '../persistence/mail-outbox.repository.js';
import type { OneTimePassword, OneTimePasswordRepository } from '../persistence/one-time-password.repository.js';

export type OtpCheck = 'ok' | 'wrong' | 'expired' | 'used';

/** A code just issued: its row's id, the plain code (mailed, never stored) and its expiry. */
export interface IssuedCode {
  id: string;
  code: string;
  expiresAt: Date;
}

export interface OtpSettings {
  length: number;
  ttlSeconds: number;
  resendCooldownSeconds: number;
}

/**
 * One-time passwords (NIST SP 800-63B): random from the OS CSPRNG, single use, expiring, stored only
 * as an HMAC under a server secret so a database leak does not reveal live codes.
 */
export class OtpService {
  constructor(
    private readonly repo: OneTimePasswordRepository,
    private readonly hmacKey: string,
    private readonly settings: OtpSettings,
  ) {}

  generateCode(length = this.settings.length): string {
    let code = '';
    for (let i = 0; i < length; i++) code += String(randomInt(10));
    return code;
  }

  hmac(purpose: string, code: string): string {
    return createHmac('sha256', this.hmacKey).update(`${purpose}\0${code}`).digest('hex');
  }

  /**
   * Issues a new code for a flow (retiring its earlier ones) and returns the plain code, to be mailed
   * and forgotten. `mailFor` may give the outbox row of the code's mail, which is then stored by the
   * same statement as the code (MailQueue.stage): the code exists only with its mail queued.
   */
  async issueForFlow(
    flowId: string,
    accountId: string | null,
    purpose = 'login',
    ttlSeconds = this.settings.ttlSeconds,
    mailFor?: (issued: IssuedCode) => ClaimedInsert | undefined,
  ): Promise<IssuedCode> {
    const issued: IssuedCode = { id: randomUUID(), code: this.generateCode(), expiresAt: new Date(Date.now() + ttlSeconds * 1000) };
    const mail = mailFor?.(issued);
    await this.repo.issue({ id: issued.id, flowId, accountId, purpose, codeHmac: this.hmac(purpose, issued.code), expiresAt: issued.expiresAt, ...(mail ? { mail } : {}) });
    return issued;
  }

  /** Whether the mail with the flow's current (unused) code was finally given up. */
  async deliveryFailed(flowId: string, purpose = 'login', known?: OneTimePassword | null): Promise<boolean> {
    const latest = known !== undefined ? known : await this.repo.latestForFlow(flowId, purpose);
    return !!latest?.deliveryFailedAt && !latest.consumedAt;
  }

  /** The code's mail could not be sent (given up, or not even queued): the flow's next step says so. */
  markDeliveryFailed(otpId: string): Promise<void> {
    return this.repo.markDeliveryFailed(otpId);
  }

  /** Seconds until another code may be sent for this flow (0 when it may be sent now). */
  async resendWait(flowId: string, purpose = 'login', known?: OneTimePassword | null): Promise<number> {
    const latest = known !== undefined ? known : await this.repo.latestForFlow(flowId, purpose);
    if (!latest) return 0;
    const wait = latest.createdAt.getTime() + this.settings.resendCooldownSeconds * 1000 - Date.now();
    return wait > 0 ? Math.ceil(wait / 1000) : 0;
  }

  /**
   * Checks a submitted code against the flow's newest code and consumes it when right. Only the
   * newest code counts; an older code of the same flow or a code of another flow is simply wrong.
   */
  async verifyForFlow(flowId: string, submitted: string, purpose = 'login', known?: OneTimePassword | null): Promise<OtpCheck> {
    const { check, codeId } = await this.checkForFlow(flowId, submitted, purpose, known);
    if (check !== 'ok') return check;
    return (await this.repo.consume(codeId!)) ? 'ok' : 'used';
  }

  /**
   * As verifyForFlow, without consuming: 'ok' names the code, which the caller must consume in the
   * same statement that moves its flow on (LoginFlowRepository), so that only one submission wins.
   */
  async checkForFlow(flowId: string, submitted: string, purpose = 'login', known?: OneTimePassword | null): Promise<{ check: OtpCheck; codeId?: string }> {
    const latest = known !== undefined ? known : await this.repo.latestForFlow(flowId, purpose);
    const candidate = this.hmac(purpose, submitted);
    // Compare even when there is no code, so the timing doesn't tell.
    const expected = latest?.codeHmac ?? this.hmac(purpose, '');
    const same = timingSafeEqual(Buffer.from(candidate, 'hex'), Buffer.from(expected, 'hex'));
    if (!latest || !same) return { check: 'wrong' };
    if (latest.consumedAt) return { check: 'used' };
    if (latest.expiresAt.getTime() <= Date.now()) return { check: 'expired' };
    return { check: 'ok', codeId: latest.id };
  }
}
