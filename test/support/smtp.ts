import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import type { AddressInfo } from 'node:net';

export interface ReceivedMail {
  to: string[];
  subject: string;
  text: string;
}

/**
 * A real SMTP server in-process that keeps what it receives, for tests. Recipients added with
 * `refuse(address)` are refused for good (550), as a mail server refuses a mailbox that does not exist.
 */
export async function startSmtpServer() {
  const messages: ReceivedMail[] = [];
  const waiters: Array<() => void> = [];
  const refused = new Set<string>();
  const newServer = () =>
    new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      logger: false,
      // Closing ends the connections a pooling client keeps open (421 "shutting down") after this grace.
      closeTimeout: 200,
      onRcptTo(address, _session, callback) {
        if (refused.has(address.address.toLowerCase())) callback(Object.assign(new Error('5.1.1 No such user here'), { responseCode: 550 }));
        else callback();
      },
      onData(stream, session, callback) {
        simpleParser(stream)
          .then((parsed) => {
            messages.push({
              to: session.envelope.rcptTo.map((r) => r.address),
              subject: parsed.subject ?? '',
              text: parsed.text ?? '',
            });
            for (const w of waiters.splice(0)) w();
            callback();
          })
          .catch((e: Error) => callback(e));
      },
    });
  let server: SMTPServer | undefined = newServer();
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;
  const closeServer = () => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())).then(() => void (server = undefined));

  /** Waits for a message matching `match` (by default: any new one to `to`). */
  async function waitFor(match: (m: ReceivedMail) => boolean, timeoutMs = 10_000): Promise<ReceivedMail> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = messages.find(match);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for mail');
      await new Promise<void>((resolve) => {
        // Woken by the next message; the timer only bounds the wait.
        const t = setTimeout(resolve, left);
        waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  return {
    url: `smtp://127.0.0.1:${port}`,
    messages,
    waitFor,
    /** The newest one-time password mailed to `address` after `since` messages. */
    async otpFor(address: string, since = 0): Promise<string> {
      const mail = await waitFor((m) => messages.indexOf(m) >= since && m.to.includes(address) && /\b\d{8}\b/.test(m.text));
      return /\b(\d{8})\b/.exec(mail.text)![1]!;
    },
    /** From now on, mail to `address` is refused for good (550 at RCPT TO). */
    refuse(address: string) {
      refused.add(address.toLowerCase());
    },
    /** An outage: the port refuses connections until start(). */
    stop: closeServer,
    /** Back on the same port after stop(). */
    async start() {
      if (server) return;
      const next = newServer();
      await new Promise<void>((resolve) => next.listen(port, '127.0.0.1', resolve));
      server = next;
    },
    close: closeServer,
  };
}
