import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { z } from 'zod';
// Runtime import is safe: login-methods.ts only imports types from config.
import { ACR_VALUES } from '../login/login-methods.js';

export const LOGIN_METHODS = ['otp', 'password', 'password_otp', 'password_certificate', 'passkey', 'otp_passkey'] as const;
export type LoginMethod = (typeof LOGIN_METHODS)[number];

/** Failures that lock an account when the contract names no threshold. */
export const DEFAULT_LOCKOUT_THRESHOLD = 5;

/** A tenant's feature set (ご契約の内容). Defaults are what a new contract gets. */
export const contractSchema = z
  .object({
    /** Login methods the tenant's accounts may use; the first is the default for new accounts. */
    login_methods: z.array(z.enum(LOGIN_METHODS)).min(1).default(['otp']),
    /** Whether the account area is offered. */
    account_area: z.boolean().default(true),
    /** Whether the support console (/console/) is offered to the tenant's staff (accounts with a role). */
    support_console: z.boolean().default(true),
    /** Whether users may add, change and delete devices themselves. */
    device_add: z.boolean().default(false),
    device_change: z.boolean().default(false),
    device_delete: z.boolean().default(false),
    /** Most devices one account may have. */
    max_devices: z.number().int().min(1).max(50).default(5),
    /**
     * Consecutive failures that lock an account, permanently (the older key, kept working). Default 5
     * when neither this nor `lockout` is given. Giving both is a configuration error: set
     * `lockout.threshold` instead.
     */
    lockout_threshold: z.number().int().min(1).max(100).optional(),
    /**
     * The lockout: `threshold` consecutive failures (1..100) lock the account. With `duration_minutes`
     * (1..10080, a week) the lock lifts by itself that long after it was taken, and the next failure
     * counts from 1 again; without it (the default) the lock is permanent and only an administrator
     * unlocks (the manual's behaviour). Default: `{ threshold: 5 }`, permanent.
     */
    lockout: z
      .object({
        threshold: z.number().int().min(1).max(100),
        duration_minutes: z.number().int().min(1).max(10080).optional(),
      })
      .strict()
      .optional(),
    /** Validity of the devices' client certificates (password_certificate method), in days. */
    certificate_validity_days: z.number().int().min(1).max(3650).default(365),
    /**
     * Whether an account of a passkey method (`passkey`, `otp_passkey`) that lost its passkey may sign in
     * through the recovery flow (mailed code + secret question) and register a new one. Default true:
     * the mailed code is the way back; false leaves it to the support desk.
     */
    passkey_recovery: z.boolean().default(true),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.lockout_threshold !== undefined && c.lockout !== undefined)
      ctx.addIssue({ code: 'custom', path: ['lockout_threshold'], message: 'give either lockout_threshold or lockout, not both (lockout.threshold replaces lockout_threshold)' });
  })
  // Parsed, the contract always holds the lockout in full (duration null: permanent), and
  // lockout_threshold the same threshold for readers of the older key.
  .transform(({ lockout_threshold, lockout, ...rest }) => {
    const threshold = lockout?.threshold ?? lockout_threshold ?? DEFAULT_LOCKOUT_THRESHOLD;
    return { ...rest, lockout_threshold: threshold, lockout: { threshold, duration_minutes: lockout?.duration_minutes ?? null } };
  });

const urlString = z.url({ protocol: /^https?$/ });

export const clientSchema = z
  .object({
    client_id: z.string().min(1).max(200),
    /** Omit for a public client (PKCE required, no secret). */
    client_secret: z.string().min(16).optional(),
    /**
     * Demand PKCE (S256) from this confidential client too. Default false: a confidential client proves
     * itself with its secret at the token endpoint, and OpenID Connect Core (and its certification)
     * lets it send no code_challenge; one it does send is always enforced. Public clients always
     * need PKCE, whatever this says.
     */
    require_pkce: z.boolean().default(false),
    /** How a confidential client authenticates at the token endpoint. */
    token_endpoint_auth_method: z.enum(['client_secret_basic', 'client_secret_post']).default('client_secret_basic'),
    name: z.string().min(1),
    /** First-party clients skip the consent screen. */
    first_party: z.boolean().default(true),
    redirect_uris: z.array(urlString).min(1),
    post_logout_redirect_uris: z.array(urlString).default([]),
    /** Grant types beyond authorization_code and refresh_token. */
    extra_grant_types: z.array(z.enum(['client_credentials'])).default([]),
    /** acr values asked for when the authorization request has no acr_values (step-up to a stronger login method). */
    default_acr_values: z.array(z.enum(ACR_VALUES as [string, ...string[]])).min(1).optional(),
    /** RFC 8705: bind this client's access tokens to the client certificate of its mutual-TLS token requests. */
    tls_client_certificate_bound_access_tokens: z.boolean().optional(),
    /** OpenID Back-Channel Logout: where the site is told (a signed logout token) that a user's session ended. */
    backchannel_logout_uri: urlString.optional(),
    /**
     * A resource server of its tenant: may introspect the tokens of the tenant's other clients (a
     * client always may introspect its own). Defaults to true for back-office clients
     * (client_credentials), false otherwise; a public client never is one.
     */
    resource_server: z.boolean().optional(),
  })
  .strict();

export const tenantSchema = z
  .object({
    id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lower-case letters, digits and hyphens'),
    name: z.string().min(1),
    contract: contractSchema.default(contractSchema.parse({})),
    clients: z.array(clientSchema).min(1),
  })
  .strict();

export const tenantsFileSchema = z
  .object({ tenants: z.array(tenantSchema).min(1) })
  .strict()
  .superRefine((file, ctx) => {
    const tenantIds = new Set<string>();
    const clientIds = new Set<string>();
    file.tenants.forEach((tenant, i) => {
      if (tenantIds.has(tenant.id)) ctx.addIssue({ code: 'custom', path: ['tenants', i, 'id'], message: `duplicate tenant id "${tenant.id}"` });
      tenantIds.add(tenant.id);
      tenant.clients.forEach((client, j) => {
        if (clientIds.has(client.client_id))
          ctx.addIssue({ code: 'custom', path: ['tenants', i, 'clients', j, 'client_id'], message: `duplicate client_id "${client.client_id}"` });
        clientIds.add(client.client_id);
      });
    });
  });

export type Contract = z.infer<typeof contractSchema>;
export type ClientConfig = z.infer<typeof clientSchema>;
export type Tenant = z.infer<typeof tenantSchema>;

/** Whether the client may introspect its tenant's tokens (see `resource_server` above). */
export function isResourceServer(client: ClientConfig): boolean {
  return !!client.client_secret && (client.resource_server ?? client.extra_grant_types.includes('client_credentials'));
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Formats zod issues as `path.to.key: message` lines so a bad file names the key. */
export function formatIssues(source: string, error: z.ZodError): string {
  return `${source} is invalid:\n` + error.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}`).join('\n');
}

export function parseTenants(source: string, text: string): Tenant[] {
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (e) {
    throw new ConfigError(`${source} is not valid YAML: ${(e as Error).message}`);
  }
  const result = tenantsFileSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(formatIssues(source, result.error));
  return result.data.tenants;
}

export function loadTenants(file: string): Tenant[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read tenants file ${file}: ${(e as Error).message}`);
  }
  return parseTenants(file, text);
}
