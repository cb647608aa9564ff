import { assertPublicDestination, OutboundRequestRefused, type Resolve } from '../oidc/outbound-fetch.js';

export interface TargetPolicy {
  /** Production: https only. */
  production: boolean;
  /** WEBHOOK_ALLOW_PRIVATE_TARGETS: loopback, private and other special-use addresses allowed. */
  allowPrivateTargets: boolean;
  resolve?: Resolve;
}

/** Why a receiver URL is refused: the message key of the `url` field's problem. */
export type TargetProblem = 'webhook_url_invalid' | 'webhook_url_scheme' | 'webhook_url_https' | 'webhook_url_credentials' | 'webhook_url_private';

/**
 * Whether the provider may POST to this URL: http(s) only, https in production, no user:password in
 * the URL (it would end up in logs), and, unless the deployment allows them, no host resolving to a
 * loopback, private or other special-use address (SSRF). Checked at registration and again before
 * every attempt, since a name can resolve elsewhere later.
 */
export async function targetProblem(raw: string, policy: TargetPolicy): Promise<TargetProblem | undefined> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'webhook_url_invalid';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'webhook_url_scheme';
  if (policy.production && url.protocol !== 'https:') return 'webhook_url_https';
  if (url.username || url.password) return 'webhook_url_credentials';
  if (policy.allowPrivateTargets) return undefined;
  try {
    await assertPublicDestination(url, policy.resolve);
  } catch (e) {
    if (e instanceof OutboundRequestRefused) return 'webhook_url_private';
    throw e;
  }
  return undefined;
}
