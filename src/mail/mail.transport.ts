import nodemailer from 'nodemailer';
import type { AppConfig } from '../config/index.js';

export interface OutgoingMail {
  from: string;
  to: readonly string[];
  subject: string;
  text: string;
  html: string;
}

export interface TransportResult {
  messageId: string | undefined;
  accepted: string[];
  rejected: string[];
}

export interface MailTransport {
  /** false without SMTP_URL: messages are composed but go nowhere (the sender records them in the dev mailbox). */
  readonly delivers: boolean;
  send(mail: OutgoingMail): Promise<TransportResult>;
  close(): void;
}

/**
 * Timeouts shorter than nodemailer's (2 min to connect, 10 min idle): a stuck server should fail the
 * attempt and let the queue retry while the OTP is still valid.
 *
 * Connections are pooled (up to 5, as many as the queue delivers at once; each carries up to 100
 * messages and is closed after 4 idle minutes): a new connection per message costs the TCP (and TLS)
 * handshake, the greeting and EHLO, and a relay that pauses before its greeting (smtp-server waits
 * 100 ms for early talkers, Postfix's postscreen longer) would cap delivery at a few messages per
 * second per connection. Query parameters of SMTP_URL (e.g. `?pool=false&connectionTimeout=30000`)
 * override these.
 */
const SMTP_DEFAULTS = { pool: true, maxConnections: 5, connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000 };

/**
 * Bodies in base64: the texts are mostly Japanese, which quoted-printable triples in size (and
 * nodemailer's QP encoder was the largest allocator of a login's mail); base64 adds a third.
 */
const MESSAGE_DEFAULTS = { textEncoding: 'base64' } as const;

/** SMTP from `smtpUrl` (smtp://user:pass@host:587, smtps://host:465); without it, a transport that delivers nowhere. */
export function createMailTransport(config: Pick<AppConfig, 'smtpUrl'>): MailTransport {
  if (!config.smtpUrl) {
    // Still builds the MIME message, so a message that could not be sent over SMTP fails here too.
    const sink = nodemailer.createTransport({ streamTransport: true, buffer: true });
    return {
      delivers: false,
      async send(mail) {
        const info = await sink.sendMail({ ...MESSAGE_DEFAULTS, ...mail, to: [...mail.to] });
        return { messageId: info.messageId, accepted: [...mail.to], rejected: [] };
      },
      close: () => sink.close(),
    };
  }
  const smtp = nodemailer.createTransport({ ...SMTP_DEFAULTS, url: config.smtpUrl });
  return {
    delivers: true,
    async send(mail) {
      const info = await smtp.sendMail({ ...MESSAGE_DEFAULTS, ...mail, to: [...mail.to] });
      return { messageId: info.messageId, accepted: info.accepted.map(addressOf), rejected: info.rejected.map(addressOf) };
    },
    close: () => smtp.close(),
  };
}

function addressOf(entry: string | { address: string }): string {
  return typeof entry === 'string' ? entry : entry.address;
}
