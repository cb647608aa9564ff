import type { ActivationService, RegistrationProblem } from '../activation/activation.service.js';
import { hashSecret, normalizeAnswer } from '../credentials/hashing.js';
import { formatEventTime } from '../history/event-time.js';
import type { Locale } from '../i18n/index.js';
import { deliverableAddresses } from '../login/factors/email-otp.factor.js';
import type { MailQueue } from '../mail/mail.types.js';
import type { AccountRepository, AccountWithDevices } from '../persistence/account.repository.js';
import type { AccountEventService } from './account-event.service.js';

/** A checked change waiting for the user's confirmation; the answer is already hashed. */
export interface PreparedSecretQuestion {
  questionId: string;
  answerHash: string;
}

/**
 * 秘密の質問・答え変更 (manual chapter 5): the same question and answer rules as activation
 * (ActivationService owns them), then a recorded event and a notice to the account's devices.
 */
export class SecretQuestionService {
  constructor(private readonly deps: { accounts: AccountRepository; activation: ActivationService; events: AccountEventService; mail: MailQueue }) {}

  questionsFor(locale: Locale): Array<{ id: string; text: string }> {
    return this.deps.activation.questionsFor(locale);
  }

  check(input: { questionId?: string; answer?: string }): RegistrationProblem | undefined {
    return this.deps.activation.checkSecretAnswer(input);
  }

  /** Hashes a checked answer so that only the hash waits for the confirmation step. */
  async prepare(input: { questionId: string; answer: string }): Promise<PreparedSecretQuestion> {
    return { questionId: input.questionId, answerHash: await hashSecret(normalizeAnswer(input.answer)) };
  }

  async change(account: AccountWithDevices, change: PreparedSecretQuestion, who: { ip: string | null; locale: Locale }): Promise<void> {
    await this.deps.accounts.setSecretQuestion(account.id, change.questionId, change.answerHash);
    await this.deps.events.record({
      tenantId: account.tenantId,
      accountId: account.id,
      type: 'secret_question_changed',
      actor: 'user',
      sourceIp: who.ip,
      detail: { from: account.secretQuestionId, to: change.questionId },
    });
    const to = deliverableAddresses(account);
    if (to.length)
      await this.deps.mail.enqueue({
        to,
        template: 'secret-question-changed',
        locale: who.locale,
        params: { userId: account.userId, time: formatEventTime(new Date(), who.locale), ip: who.ip ?? '-' },
      });
  }
}
