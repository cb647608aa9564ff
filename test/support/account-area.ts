import type { TestServer } from './harness.js';
import { Agent, csrfOf } from './browser-less.js';

/**
 * Signs in to the account area from a relying site's link as a browser would: follows the redirects
 * through the provider's login (user ID, the code mailed to `email`) back into the area, and returns
 * the last response (the area page, normally).
 */
export async function signInToArea(s: TestServer, agent: Agent, u: { userId: string; email: string }, entry = '/account/?client_id=rp-basic'): Promise<Response> {
  let res = await agent.get(entry);
  const before = s.smtp.messages.length;
  for (let i = 0; i < 20 && res.headers.get('location'); i++) {
    const url = new URL(res.headers.get('location')!, s.issuer);
    res = await agent.get(url.pathname + url.search);
    if (/^\/interaction\/[^/]+$/.test(url.pathname) && res.status === 200) {
      let html = await res.text();
      if (html.includes('name="userId"')) {
        await agent.post(`${url.pathname}/identify`, { _csrf: csrfOf(html), userId: u.userId });
        html = await (await agent.get(url.pathname)).text();
      }
      const otp = await s.smtp.otpFor(u.email, before);
      res = await agent.post(`${url.pathname}/otp`, { _csrf: csrfOf(html), otp });
    }
  }
  return res;
}

/** Follows redirects from `res` within the provider (e.g. after a re-authentication) until a page. */
export async function follow(s: TestServer, agent: Agent, res: Response): Promise<Response> {
  let current = res;
  for (let i = 0; i < 20 && current.headers.get('location'); i++) {
    const url = new URL(current.headers.get('location')!, s.issuer);
    current = await agent.get(url.pathname + url.search);
  }
  return current;
}
