import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import type { AsymmetricSigningAlgorithm } from 'oidc-provider';
import { ConfigError, type AppConfig } from '../config/index.js';

export interface Jwks {
  keys: Array<Record<string, unknown>>;
}

function parseJwks(source: string, text: string): Jwks {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${source} is not valid JSON: ${(e as Error).message}`);
  }
  const keys = (parsed as { keys?: unknown }).keys;
  if (!Array.isArray(keys) || keys.length === 0 || !keys.every((k) => k && typeof k === 'object' && 'd' in k))
    throw new ConfigError(`${source}: expected {"keys": [...]} with at least one private key`);
  return { keys: keys as Jwks['keys'] };
}

/** A fresh RS256 signing key (RS256 is what every OIDC client must support). */
export async function generateJwks(): Promise<Jwks> {
  const { privateKey } = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const jwk = await exportJWK(privateKey);
  return { keys: [{ ...jwk, kid: `sig-${new Date().toISOString().slice(0, 10)}-${Math.random().toString(36).slice(2, 8)}`, use: 'sig', alg: 'RS256' }] };
}

/**
 * Signing keys: JWKS (env) or JWKS_FILE; outside production, generated once and kept under
 * DATA_DIR so tokens survive restarts (never the library's built-in development keys).
 */
export async function loadSigningKeys(config: Pick<AppConfig, 'jwks' | 'jwksFile' | 'dataDir' | 'env'>): Promise<Jwks> {
  if (config.jwks) return parseJwks('JWKS', config.jwks);
  if (config.jwksFile) {
    let text: string;
    try {
      text = readFileSync(config.jwksFile, 'utf8');
    } catch (e) {
      throw new ConfigError(`cannot read JWKS_FILE ${config.jwksFile}: ${(e as Error).message}`);
    }
    return parseJwks(config.jwksFile, text);
  }
  if (config.env === 'production') throw new ConfigError('JWKS or JWKS_FILE is required in production');
  const file = join(config.dataDir, 'jwks.json');
  if (existsSync(file)) return parseJwks(file, readFileSync(file, 'utf8'));
  const jwks = await generateJwks();
  mkdirSync(config.dataDir, { recursive: true });
  writeFileSync(file, JSON.stringify(jwks, null, 2), { mode: 0o600 });
  return jwks;
}

// What each key type can sign, in oidc-provider's names; RS256 first, as every OIDC client supports it.
const ALGS_BY_KEY: Record<string, AsymmetricSigningAlgorithm[]> = { RSA: ['RS256', 'PS256'], 'EC:P-256': ['ES256'], 'OKP:Ed25519': ['Ed25519', 'EdDSA'] };

/** The ID token signing algorithms the signing keys can produce (a key's own `alg`, else its type's). */
export function signingAlgs(jwks: Jwks): AsymmetricSigningAlgorithm[] {
  const algs = new Set<AsymmetricSigningAlgorithm>();
  for (const key of jwks.keys) {
    if (key.use !== undefined && key.use !== 'sig') continue;
    const type = key.kty === 'RSA' ? 'RSA' : `${String(key.kty)}:${String(key.crv)}`;
    const possible = ALGS_BY_KEY[type] ?? [];
    for (const alg of typeof key.alg === 'string' ? possible.filter((a) => a === key.alg) : possible) algs.add(alg);
  }
  if (!algs.size) throw new ConfigError('JWKS: no key can sign ID tokens (an RSA, EC P-256 or Ed25519 signing key is needed)');
  return [...algs].sort((a, b) => Number(b === 'RS256') - Number(a === 'RS256'));
}
