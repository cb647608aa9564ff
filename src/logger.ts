import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

/** Structured JSON logs. One-time passwords, passwords and secret answers are never logged. */
export function createLogger(level: string = 'info', name = 'idp'): Logger {
  return pino({
    name,
    level,
    redact: { paths: ['otp', 'code', 'password', 'answer', '*.otp', '*.code', '*.password', '*.answer', 'params.otp'], censor: '[redacted]' },
  });
}
