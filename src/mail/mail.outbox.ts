import { serialPoll } from '../serial-poll.js';
import { randomUUID } from 'node:crypto';
import type { Logger } from '../logger.js';
import { claimedInsert, claimedMessage, type ClaimedMailMessage, type MailMessage } from '../persistence/mail-outbox.repository.js';
import { attemptDelivery, markCodeUndelivered, retryPolicy, type MailStore } from './mail.delivery.js';
import { mailSealer, type MailEnvelope } from './mail.envelope.js';
import { errorMessage } from './mail.sender.js';
import { MAIL_TEMPLATES, deliverByOf, parseMailJob, type MailJob, type MailQueue, type MailSender, type MailTemplate, type RetryPolicy, type StagedMail, type UndeliveredMail } from './mail.types.js';

export interface OutboxOptions {
  retry?: Partial<RetryPolicy>;
  /** Messages one instance delivers at the same time. Default 5. */
  concurrency?: number;
  /**
   * How often the outbox is looked at for messages no one is sending: another instance's that died
   * holding them, or retries it had scheduled. Default 5 s. A process sends what it queues at once and
   * its own retries on time, without waiting for a poll.
   */
  pollMs?: number;
  /** How long a taken message is reserved; renewed while its delivery runs, so another instance takes over this soon after a crash. Default 5 s. */
  leaseMs?: number;
  /** Deliver only what this process queued (the admin CLI), leaving the rest to the providers. Default false. */
  onlyOwn?: boolean;
}

const DAY = 24 * 3_600_000;
// Sent messages are kept a while as a trail; given-up ones longer, for operators to look into.
const SENT_RETENTION_MS = 7 * DAY;
const FAILED_RETENTION_MS = 30 * DAY;

/** An outbox row as operators see it: never its payload. */
export function undeliveredOf(r: MailMessage): UndeliveredMail {
  return {
    id: r.id,
    status: r.status === 'failed' ? 'failed' : 'pending',
    template: r.template,
    tenantId: r.tenantId,
    recipients: r.recipients,
    maskedTo: r.maskedTo ? r.maskedTo.split(',') : [],
    createdAt: r.createdAt,
    deliverBy: r.deliverBy,
    attempts: r.attempts,
    nextAttemptAt: r.status === 'pending' ? r.nextAttemptAt : null,
    lastError: r.lastError,
    source: 'outbox',
  };
}

/**
 * The sealed job of a taken row; undefined, with the row given up, for a template this version does
 * not know (queued by another version of the provider).
 */
export async function envelopeOfRow(row: ClaimedMailMessage, holder: { outbox: Pick<MailStore['outbox'], 'markFailed'>; logger: Logger; token: string }): Promise<MailEnvelope | undefined> {
  if (!(MAIL_TEMPLATES as readonly string[]).includes(row.template)) {
    holder.logger.error({ jobId: row.id, template: row.template }, 'mail delivery failed; giving up');
    await holder.outbox.markFailed(row.id, holder.token, `unknown template ${row.template}`);
    return undefined;
  }
  return {
    v: 1,
    template: row.template as MailTemplate,
    tenantId: row.tenantId,
    otpId: row.otpId,
    recipients: row.recipients,
    maskedTo: row.maskedTo.split(','),
    deliverBy: row.deliverBy.getTime(),
    payload: row.payload ?? '',
  };
}

/**
 * The queue without Redis: enqueue is one insert into the outbox table; a worker in this process takes
 * due rows with a lease and delivers them, with the same retry rule as BullMQ. Queued mail survives a
 * restart, and several instances on one database share the work.
 */
export function createOutboxMailQueue(deps: { sender: MailSender; logger: Logger; store: MailStore; sealKeys: string[]; options?: OutboxOptions }): MailQueue {
  const { sender, logger, store, options = {} } = deps;
  const { outbox } = store;
  const policy = retryPolicy(options.retry);
  const sealer = mailSealer(deps.sealKeys);
  const concurrency = Math.max(1, options.concurrency ?? 5);
  const pollMs = options.pollMs ?? 5_000;
  const leaseMs = options.leaseMs ?? 5_000;
  const token = randomUUID();
  const inHand = new Map<string, Promise<void>>();
  // When each row in hand was taken (its lease ran from then).
  const takenAt = new Map<string, number>();
  // Rows this process queued and has not seen through an attempt: close() gives each one try.
  const own = new Set<string>();
  // Rows this process took as it queued them while every delivery slot was busy; they start as slots
  // free up, their leases renewed meanwhile (another instance takes them if this one dies).
  const waiting: ClaimedMailMessage[] = [];
  const maxWaiting = concurrency * 20;
  // Messages being added right now (until their delivery has started or they wait in the table).
  const enqueuing = new Set<Promise<void>>();
  let closing = false;
  let closed: Promise<void> | undefined;
  const polls = serialPoll(poll, (err: unknown) => logger.warn({ err: errorMessage(err) }, 'mail outbox: polling failed'));
  const kick = polls.kick;
  // More may be due than this process had room for: a finished delivery looks again at once.
  let backlog = false;
  let lastPurge = 0;

  const pollTimer = setInterval(() => kick(), pollMs);
  pollTimer.unref();
  const leaseTimer = setInterval(() => {
    // Only leases a third gone: most messages are sent long before that, and need no statement.
    const due = [...takenAt].filter(([, at]) => Date.now() - at >= leaseMs / 3).map(([id]) => id);
    if (!due.length) return;
    for (const id of due) takenAt.set(id, Date.now());
    outbox.renewLease(due, token, leaseMs).catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'mail outbox: renewing leases failed'));
  }, Math.max(50, Math.floor(leaseMs / 3)));
  leaseTimer.unref();

  async function poll(): Promise<void> {
    const free = concurrency - inHand.size - waiting.length;
    if (free <= 0) {
      backlog = true;
      return;
    }
    if (options.onlyOwn && own.size === 0) return;
    const rows = await outbox.claimDue({ limit: free, leaseMs, token, ...(options.onlyOwn ? { ids: [...own] } : {}) });
    backlog = rows.length === free;
    for (const row of rows) start(row);
    await purge();
  }

  function start(row: ClaimedMailMessage): void {
    own.delete(row.id);
    const running = deliver(row)
      .catch((err: unknown) => logger.error({ err: errorMessage(err), id: row.id }, 'mail outbox: recording a delivery attempt failed'))
      .finally(() => {
        inHand.delete(row.id);
        takenAt.delete(row.id);
        const next = waiting.shift();
        if (next) start(next);
        // Otherwise the next poll (or enqueue) finds what is due; an idle instance sends no statement here.
        else if (backlog || own.size > 0) kick();
      });
    inHand.set(row.id, running);
    takenAt.set(row.id, Date.now());
  }

  async function deliver(row: ClaimedMailMessage): Promise<void> {
    const envelope = await envelopeOfRow(row, { outbox, logger, token });
    if (!envelope) return;
    const { template } = envelope;
    const outcome = await attemptDelivery({ sender, sealer, policy, logger }, { jobId: row.id, envelope, template, deliverBy: envelope.deliverBy, attempt: row.attempts });
    if (outcome.kind === 'sent') await outbox.markSent(row.id, token);
    else if (outcome.kind === 'retry') {
      await outbox.markRetry(row.id, token, new Date(outcome.at), outcome.error);
      // Retry on time rather than at the next poll (any instance may take it then).
      setTimeout(kick, Math.max(0, outcome.at - Date.now())).unref();
    }
    else {
      await outbox.markFailed(row.id, token, outcome.error);
      await markCodeUndelivered(store, logger, row.otpId);
    }
  }

  function sealed(input: MailJob) {
    const job = parseMailJob(input);
    const envelope = sealer.seal(job, deliverByOf(policy, job));
    return { ...envelope, deliverBy: new Date(envelope.deliverBy) };
  }

  const hasRoom = () => inHand.size + waiting.length < concurrency + maxWaiting;

  /** A row this process took as it was stored: delivered now, or as soon as a delivery slot is free. */
  function deliverTaken(row: ClaimedMailMessage): void {
    if (inHand.size < concurrency && waiting.length === 0) start(row);
    else {
      waiting.push(row);
      takenAt.set(row.id, Date.now());
    }
  }

  function stage(input: MailJob): StagedMail | undefined {
    if (closing || !hasRoom()) return undefined;
    const row = claimedInsert(sealed(input), { token, leaseMs });
    return {
      row,
      stored() {
        // Closing meanwhile, or the slots filled up: the row waits in the table, and its lease runs out
        // for any instance's poll to take it.
        if (closing || !hasRoom()) return;
        deliverTaken(claimedMessage(row));
      },
    };
  }

  async function add(input: Parameters<MailQueue['enqueue']>[0]): Promise<void> {
    const message = sealed(input);
    if (hasRoom()) {
      // Taken by this process as it is added (one statement, no claim), and delivered now or as soon
      // as a delivery slot is free.
      deliverTaken(await outbox.addClaimed(message, { token, leaseMs }));
      return;
    }
    // A long backlog stays in the table for any instance to take.
    backlog = true;
    const id = await outbox.add(message);
    own.add(id);
    // Delivery starts after the caller (usually a request) has moved on.
    setImmediate(kick);
  }

  async function purge(): Promise<void> {
    if (Date.now() - lastPurge < 3_600_000) return;
    lastPurge = Date.now();
    const purged = await outbox.deleteFinished(new Date(Date.now() - SENT_RETENTION_MS), new Date(Date.now() - FAILED_RETENTION_MS));
    if (purged) logger.info({ purged }, 'mail outbox: purged old messages');
  }

  return {
    enqueue(input) {
      if (closing) return Promise.reject(new Error('mail queue is closed'));
      // close() waits for messages being added, and then for their deliveries.
      const adding = add(input);
      enqueuing.add(adding);
      void adding.then(
        () => enqueuing.delete(adding),
        () => enqueuing.delete(adding),
      );
      return adding;
    },
    async undelivered(filter = {}) {
      return (await outbox.listUndelivered(filter)).map(undeliveredOf);
    },
    stage,
    close() {
      closing = true;
      polls.stop();
      closed ??= (async () => {
        clearInterval(pollTimer);
        await polls.idle();
        await Promise.allSettled(enqueuing);
        // Waiting rows start as the deliveries before them end.
        while (inHand.size > 0) await Promise.all(inHand.values());
        try {
          const rows = await outbox.claimDue({ limit: own.size, leaseMs, token, ids: [...own] });
          for (const row of rows) start(row);
          await Promise.all(inHand.values());
        } catch (err) {
          logger.warn({ err: errorMessage(err) }, 'mail outbox: last delivery round failed; the messages stay queued');
        }
        clearInterval(leaseTimer);
        sender.close();
      })();
      return closed;
    },
  };
}
