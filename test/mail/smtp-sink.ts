// A real SMTP server for the mail tests (smtp-server on port 0) and a small MIME reader for what it receives.
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { SMTPServer } from 'smtp-server';

export interface ReceivedMail {
  from: string;
  to: string[];
  raw: string;
  subject: string;
  /** Decoded text/plain part. */
  text: string;
  /** Decoded text/html part. */
  html: string;
}

export interface SmtpSink {
  url: string;
  received: ReceivedMail[];
  /** Transactions refused so far. */
  refusals: number;
  /** SMTP connections opened to the sink so far. */
  connections: number;
  /** SMTP connections open now. */
  openConnections(): number;
  waitFor(count: number, timeoutMs?: number): Promise<ReceivedMail[]>;
  close(): Promise<void>;
}

/**
 * `refuse(n)` is asked once per transaction (n = 1, 2, ...) and returns an SMTP reply code to refuse
 * it with (451 temporary, 550 permanent), or nothing to accept it. `port`: listen there (a restarted server).
 * `holdUntil`: every transaction waits at MAIL FROM until it settles (a slow server, released by the test).
 */
export async function startSmtpSink(opts: { refuse?: (transaction: number) => number | undefined; port?: number; holdUntil?: Promise<unknown> } = {}): Promise<SmtpSink> {
  const received: ReceivedMail[] = [];
  let transactions = 0;
  const sink: SmtpSink = {
    url: '',
    received,
    refusals: 0,
    connections: 0,
    openConnections: () => server.connections.size,
    async waitFor(count, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (received.length < count) {
        if (Date.now() > deadline) throw new Error(`expected ${count} mail(s), got ${received.length} (refused ${sink.refusals})`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return received;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    // Closing ends the connections a pooling client keeps open (421 "shutting down") after this grace.
    closeTimeout: 200,
    onConnect(_session, callback) {
      sink.connections++;
      callback();
    },
    async onMailFrom(_address, _session, callback) {
      if (opts.holdUntil) await opts.holdUntil;
      const code = opts.refuse?.(++transactions);
      if (code) {
        sink.refusals++;
        callback(Object.assign(new Error(code >= 500 ? 'mailbox unavailable' : 'try again later'), { responseCode: code }));
        return;
      }
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const parsed = parseMessage(raw);
        received.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((r) => r.address),
          raw,
          ...parsed,
        });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', () => resolve()));
  sink.url = `smtp://127.0.0.1:${(server.server.address() as AddressInfo).port}`;
  return sink;
}

/** Enough MIME for nodemailer's output: headers, RFC 2047 words, multipart/alternative, QP and base64. */
export function parseMessage(raw: string): { subject: string; text: string; html: string } {
  const { headers, body } = splitEntity(raw);
  const parts: Array<{ type: string; content: string }> = [];
  const collect = (h: Map<string, string>, b: string) => {
    const type = h.get('content-type') ?? 'text/plain';
    const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1];
    if (type.toLowerCase().startsWith('multipart/') && boundary) {
      const sections = b.split(`--${boundary}`).slice(1);
      for (const section of sections) {
        if (section.startsWith('--')) break;
        const inner = splitEntity(section.replace(/^\r?\n/, ''));
        collect(inner.headers, inner.body);
      }
      return;
    }
    parts.push({ type: type.toLowerCase(), content: decodeBody(b, h.get('content-transfer-encoding') ?? '7bit') });
  };
  collect(headers, body);
  return {
    subject: decodeWords(headers.get('subject') ?? ''),
    text: parts.find((p) => p.type.startsWith('text/plain'))?.content ?? '',
    html: parts.find((p) => p.type.startsWith('text/html'))?.content ?? '',
  };
}

function splitEntity(raw: string): { headers: Map<string, string>; body: string } {
  const end = raw.search(/\r?\n\r?\n/);
  const head = end < 0 ? raw : raw.slice(0, end);
  const body = end < 0 ? '' : raw.slice(end).replace(/^\r?\n\r?\n/, '');
  const headers = new Map<string, string>();
  for (const line of head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  return { headers, body };
}

function decodeBody(body: string, encoding: string): string {
  switch (encoding.toLowerCase()) {
    case 'base64':
      return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
    case 'quoted-printable':
      return qpDecode(body.replace(/=\r?\n/g, '')).replace(/\r\n/g, '\n');
    default:
      return body.replace(/\r\n/g, '\n');
  }
}

function qpDecode(s: string): string {
  return qpBytes(s).toString('utf8');
}

function qpBytes(s: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '=' && /^[0-9A-F]{2}$/i.test(s.slice(i + 1, i + 3))) {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(s[i] ?? '', 'utf8'));
    }
  }
  return Buffer.from(bytes);
}

function decodeWords(value: string): string {
  // Adjacent encoded words are joined without the whitespace between them (RFC 2047 6.2); their
  // bytes are joined before decoding, as a UTF-8 character may be split across two words.
  const words = value.replace(/\?=\s+=\?/g, '?==?');
  return words.replace(/((?:=\?[^?]+\?[BbQq]\?[^?]*\?=)+)/g, (run) => {
    const bytes: Buffer[] = [];
    for (const m of run.matchAll(/=\?([^?]+)\?([BbQq])\?([^?]*)\?=/g)) {
      const [, , enc = '', data = ''] = m;
      if (enc.toUpperCase() === 'B') bytes.push(Buffer.from(data, 'base64'));
      else bytes.push(qpBytes(data.replace(/_/g, ' ')));
    }
    return Buffer.concat(bytes).toString('utf8');
  });
}

/** A pino logger writing JSON lines into `lines`, at the most verbose level and without redaction. */
export function captureLogger(): { logger: Logger; lines: string[]; output(): string } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  return { logger: pino({ level: 'trace' }, stream), lines, output: () => lines.join('') };
}
