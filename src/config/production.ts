import { accessSync, constants } from 'node:fs';
import type { Env } from './env.js';
import type { Tenant } from './tenants.js';

/**
 * Marks the example client secrets shipped in config/tenants.yaml (`demo-site-secret-change-me`, ...):
 * a production tenants file holding one would let anybody who read this repository act as that client.
 */
const EXAMPLE_SECRET_MARK = 'change-me';

/** Hosts for which an http issuer stays allowed in production: only this machine can reach them. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return host === 'localhost' || host.endsWith('.localhost') || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

/**
 * What production refuses to start with, one `KEY: reason` entry per problem (empty: fit to start):
 * - missing secrets: COOKIE_KEYS, OTP_HMAC_KEY, and JWKS or JWKS_FILE (elsewhere generated under DATA_DIR);
 * - an http ISSUER, unless its host is a loopback address (a local test or benchmark run);
 * - a client secret from the bundled examples (containing "change-me");
 * - client certificates (a contract allowing password_certificate) without CA_CERT_FILE, CA_KEY_FILE
 *   and CERTIFICATE_SECRET; a mutual-TLS listener (MTLS_PORT) without MTLS_KEY_FILE and MTLS_CERT_FILE;
 * - a key or certificate file that is set but cannot be read (its contents are checked where it is loaded).
 */
export function productionProblems(e: Env, issuer: string, tenants: Tenant[], tenantsSource: string): string[] {
  const problems: string[] = [];
  const missing: string[] = [];
  if (!e.COOKIE_KEYS) missing.push('COOKIE_KEYS');
  if (!e.OTP_HMAC_KEY) missing.push('OTP_HMAC_KEY');
  if (!e.JWKS && !e.JWKS_FILE) missing.push('JWKS or JWKS_FILE');
  if (missing.length) problems.push(`${missing.join(', ')}: required in production`);

  const url = new URL(issuer);
  if (url.protocol !== 'https:' && !isLoopbackHost(url.hostname)) problems.push(`ISSUER: must be an https URL in production (http only for a loopback host such as 127.0.0.1), not ${url.protocol}//${url.host}`);

  const examples = tenants.flatMap((t) => t.clients.filter((c) => c.client_secret?.toLowerCase().includes(EXAMPLE_SECRET_MARK)).map((c) => c.client_id));
  if (examples.length)
    problems.push(`${tenantsSource}: ${examples.length === 1 ? 'client' : 'clients'} ${examples.join(', ')} ${examples.length === 1 ? 'has' : 'have'} an example client_secret (containing "${EXAMPLE_SECRET_MARK}"); give each a random secret of its own`);

  const certificateTenants = tenants.filter((t) => t.contract.login_methods.includes('password_certificate')).map((t) => t.id);
  if (certificateTenants.length) {
    const ca = (['CA_CERT_FILE', 'CA_KEY_FILE', 'CERTIFICATE_SECRET'] as const).filter((k) => !e[k]);
    if (ca.length) problems.push(`${ca.join(', ')}: required in production when a contract allows password_certificate (tenant ${certificateTenants.join(', ')})`);
  }
  if (e.MTLS_PORT !== undefined) {
    const tls = (['MTLS_KEY_FILE', 'MTLS_CERT_FILE'] as const).filter((k) => !e[k]);
    if (tls.length) problems.push(`${tls.join(', ')}: required in production when MTLS_PORT is set`);
  }
  for (const key of ['JWKS_FILE', 'CA_CERT_FILE', 'CA_KEY_FILE', 'MTLS_KEY_FILE', 'MTLS_CERT_FILE'] as const) {
    const file = e[key];
    if (!file) continue;
    try {
      accessSync(file, constants.R_OK);
    } catch (error) {
      problems.push(`${key}: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
  }
  return problems;
}
