import type { AccountRepository } from '../persistence/account.repository.js';
import type { TenantDirectory } from '../config/index.js';

export const DEMO_TENANT = 'demo';
export const DEMO_USER_ID = 'demo-user';
export const DEMO_EMAIL = 'demo-user@example.com';

/** Creates the demo account (development only) so a newcomer can sign in straight away. */
export async function seedDemoAccount(accounts: AccountRepository, tenants: TenantDirectory): Promise<boolean> {
  if (!tenants.tenant(DEMO_TENANT)) return false;
  if (await accounts.findByUserId(DEMO_TENANT, DEMO_USER_ID)) return false;
  await accounts.create({ tenantId: DEMO_TENANT, userId: DEMO_USER_ID, loginMethod: 'otp', devices: [{ email: DEMO_EMAIL, kind: 'pc' }] });
  return true;
}
