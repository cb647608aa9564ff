import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, randomInt } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, type AppConfig } from '../config/index.js';

// Letters and digits without the look-alikes (0/O/o, 1/l/I), since users copy it from the screen.
const ALPHABET = 'abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789';
export const DOWNLOAD_PASSWORD_LENGTH = 8;

/** A readable random password such as the manual's `y1alO7TR` (it protects only the PKCS#12 file). */
export function randomDownloadPassword(): string {
  let out = '';
  for (let i = 0; i < DOWNLOAD_PASSWORD_LENGTH; i++) out += ALPHABET[randomInt(ALPHABET.length)];
  return out;
}

/**
 * Encrypts the download passwords at rest (AES-256-GCM). They must stay readable, because the device
 * table shows them (証明書ダウンロード用パスワード), so they are encrypted rather than hashed.
 */
export class DownloadPasswordBox {
  private readonly key: Buffer;

  constructor(secret: string) {
    this.key = Buffer.from(hkdfSync('sha256', secret, 'anshin-login', 'certificate download password', 32));
  }

  seal(password: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const data = Buffer.concat([cipher.update(password, 'utf8'), cipher.final()]);
    return ['v1', iv.toString('base64url'), data.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
  }

  open(sealed: string): string {
    const [version, iv, data, tag] = sealed.split('.');
    if (version !== 'v1' || !iv || !data || !tag) throw new Error('unknown download password format');
    const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64url'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(data, 'base64url')), decipher.final()]).toString('utf8');
  }
}

/** CERTIFICATE_SECRET; outside production generated once under DATA_DIR/ca (like the CA itself). */
export function loadCertificateSecret(config: Pick<AppConfig, 'env' | 'dataDir' | 'certificates'>): string {
  if (config.certificates.secret) return config.certificates.secret;
  if (config.env === 'production') throw new ConfigError('CERTIFICATE_SECRET is required in production when a contract allows password_certificate');
  const dir = join(config.dataDir, 'ca');
  const file = join(dir, 'download-password.secret');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const secret = randomBytes(32).toString('base64url');
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, secret, { mode: 0o600 });
  return secret;
}
