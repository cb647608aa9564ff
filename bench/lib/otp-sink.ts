import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export interface CapturedOtp {
  otp: string;
  /** performance.now() when the message had been received and parsed. */
  receivedAt: number;
}

export interface OtpSink {
  url: string;
  /** Resolves with the next OTP mailed to `address` (each address is expected to get one per login). */
  waitForOtp(address: string, timeoutMs: number): Promise<CapturedOtp>;
  stats(): { messages: number; withoutOtp: number; parseErrors: number };
  close(): Promise<void>;
}

/**
 * An SMTP server in the bench process that keeps only the OTPs, keyed by recipient. Both providers
 * deliver here, so mail transport and parsing cost the same for both.
 */
export async function startOtpSink(otpLength = 8): Promise<OtpSink> {
  const otpPattern = new RegExp(`(?<!\\d)(\\d{${otpLength}})(?!\\d)`);
  const arrived = new Map<string, CapturedOtp[]>();
  const waiters = new Map<string, Array<(m: CapturedOtp) => void>>();
  // So that close() can end every wait at once instead of letting each run into its timeout.
  const cancels = new Set<(e: Error) => void>();
  let messages = 0;
  let withoutOtp = 0;
  let parseErrors = 0;

  function deliver(address: string, captured: CapturedOtp) {
    const queue = waiters.get(address);
    const waiter = queue?.shift();
    if (queue && queue.length === 0) waiters.delete(address);
    if (waiter) waiter(captured);
    else arrived.set(address, [...(arrived.get(address) ?? []), captured]);
  }

  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    // A reverse DNS lookup per connection would add resolver latency to every mail.
    disableReverseLookup: true,
    logger: false,
    onData(stream, session, callback) {
      // The code is read from the text part: mailparser's HTML↔text conversions (entity encoding,
      // link detection) would be the bench's own CPU, taken from the 2 cores the providers share.
      simpleParser(stream, { skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true })
        .then((parsed) => {
          messages++;
          const otp = otpPattern.exec(parsed.text ?? '')?.[1];
          if (!otp) {
            withoutOtp++;
          } else {
            const receivedAt = performance.now();
            for (const r of session.envelope.rcptTo) deliver(r.address.toLowerCase(), { otp, receivedAt });
          }
          callback();
        })
        .catch((e: Error) => {
          parseErrors++;
          callback(e);
        });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.server.address() as AddressInfo).port;

  return {
    url: `smtp://127.0.0.1:${port}`,
    waitForOtp(address, timeoutMs) {
      const key = address.toLowerCase();
      const ready = arrived.get(key);
      if (ready?.length) {
        const first = ready.shift()!;
        if (ready.length === 0) arrived.delete(key);
        return Promise.resolve(first);
      }
      return new Promise<CapturedOtp>((resolve, reject) => {
        const fail = (e: Error) => {
          clearTimeout(timer);
          cancels.delete(fail);
          const queue = waiters.get(key);
          const i = queue?.indexOf(waiter) ?? -1;
          if (queue && i >= 0) queue.splice(i, 1);
          if (queue?.length === 0) waiters.delete(key);
          reject(e);
        };
        const waiter = (m: CapturedOtp) => {
          clearTimeout(timer);
          cancels.delete(fail);
          resolve(m);
        };
        const timer = setTimeout(() => fail(new Error(`no OTP mail for ${address} within ${timeoutMs} ms`)), timeoutMs);
        cancels.add(fail);
        waiters.set(key, [...(waiters.get(key) ?? []), waiter]);
      });
    },
    stats: () => ({ messages, withoutOtp, parseErrors }),
    close() {
      for (const cancel of [...cancels]) cancel(new Error('SMTP sink closed'));
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
