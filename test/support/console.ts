import { hashSecret } from '../../src/credentials/hashing.js';
import type { TestServer } from './harness.js';
import { uniqueUser } from './harness.js';
import { Agent, csrfOf } from './browser-less.js';

export const STAFF_PASSWORD = 'staff-password-0123';

/** Tenants for console tests: t1 and t2 both allow password + one-time password besides the OTP. */
export function consoleTenantsYaml(base: string): string {
  return base
    .replace('contract: { login_methods: [otp], lockout_threshold: 5,', 'contract: { login_methods: [otp, password_otp], lockout_threshold: 5,')
    .replace('  - id: t2\n    name: テナント2\n', '  - id: t2\n    name: テナント2\n    contract: { login_methods: [otp, password_otp] }\n');
}

/** An active account of `tenantId` with a password, signing in with password + mailed code, and a role. */
export async function newStaff(s: TestServer, tenantId: string, role: 'support' | 'admin' | null, loginMethod = 'password_otp') {
  const u = uniqueUser(role ?? 'user');
  const a = await s.app.services.accounts.create({ tenantId, userId: u.userId, loginMethod, devices: [{ email: u.email }] });
  await s.app.services.accounts.setPassword(a.id, await hashSecret(STAFF_PASSWORD));
  if (role) await s.db.prisma.account.update({ where: { id: a.id }, data: { role } });
  return { ...u, id: a.id, tenantId };
}

/**
 * Walks the provider's login screens from `res` as a browser would: the user ID, the password, the
 * code mailed to `u.email`, following every redirect; returns the last response.
 */
export async function walkLogin(s: TestServer, agent: Agent, res: Response, u: { userId: string; email: string }): Promise<Response> {
  const before = s.smtp.messages.length;
  let current = res;
  for (let i = 0; i < 30 && current.headers.get('location'); i++) {
    const url = new URL(current.headers.get('location')!, s.issuer);
    if (url.origin !== new URL(s.issuer).origin) return current;
    current = await agent.get(url.pathname + url.search);
    if (/^\/interaction\/[^/]+$/.test(url.pathname) && current.status === 200) {
      const html = await current.text();
      if (html.includes(`${url.pathname}/identify"`)) current = await agent.post(`${url.pathname}/identify`, { _csrf: csrfOf(html), userId: u.userId });
      else if (html.includes(`${url.pathname}/password"`)) current = await agent.post(`${url.pathname}/password`, { _csrf: csrfOf(html), password: STAFF_PASSWORD });
      else if (html.includes(`${url.pathname}/otp"`)) current = await agent.post(`${url.pathname}/otp`, { _csrf: csrfOf(html), otp: await s.smtp.otpFor(u.email, before) });
      else return new Response(html, { status: current.status });
      // Each step answers with a redirect to the interaction page (the next step) or onwards.
      if (!current.headers.get('location')) return current;
    }
  }
  return current;
}

/** Signs in to a tenant's support console; returns the last response (the search page, normally). */
export async function signInToConsole(s: TestServer, agent: Agent, u: { userId: string; email: string }, tenant: string, entry = '/console/'): Promise<Response> {
  const first = await agent.get(entry);
  const login = new URL(first.headers.get('location')!, s.issuer);
  login.searchParams.set('tenant', tenant);
  return walkLogin(s, agent, await agent.get(login.pathname + login.search), u);
}
