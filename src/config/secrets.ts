import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AppConfig } from './index.js';

export interface Secrets {
  cookieKeys: string[];
  otpHmacKey: string;
}

/**
 * Cookie keys and the OTP HMAC key. Production requires them in the environment (loadConfig checks);
 * elsewhere a missing one is generated once and kept under DATA_DIR.
 */
export function resolveSecrets(config: Pick<AppConfig, 'cookieKeys' | 'otpHmacKey' | 'dataDir'>): Secrets {
  if (config.cookieKeys?.length && config.otpHmacKey) return { cookieKeys: config.cookieKeys, otpHmacKey: config.otpHmacKey };
  const file = join(config.dataDir, 'secrets.json');
  let stored: Partial<Secrets> = {};
  if (existsSync(file)) stored = JSON.parse(readFileSync(file, 'utf8')) as Partial<Secrets>;
  const generated: Secrets = {
    cookieKeys: stored.cookieKeys ?? [randomBytes(32).toString('base64url')],
    otpHmacKey: stored.otpHmacKey ?? randomBytes(32).toString('base64url'),
  };
  if (!stored.cookieKeys || !stored.otpHmacKey) {
    mkdirSync(config.dataDir, { recursive: true });
    writeFileSync(file, JSON.stringify(generated, null, 2), { mode: 0o600 });
  }
  return { cookieKeys: config.cookieKeys?.length ? config.cookieKeys : generated.cookieKeys, otpHmacKey: config.otpHmacKey ?? generated.otpHmacKey };
}
