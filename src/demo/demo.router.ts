import Router from '@koa/router';
import type { Context } from 'koa';
import * as oidc from 'openid-client';
import type { AppConfig, TenantDirectory } from '../config/index.js';
import { BadRequestError } from '../http/errors.js';

export const DEMO_CLIENT_ID = 'demo-site';
const COOKIE = 'demo_rp';

interface DemoState {
  verifier?: string;
  state?: string;
  nonce?: string;
  idToken?: string;
  claims?: Record<string, unknown>;
  userinfo?: Record<string, unknown>;
}

/**
 * A tiny relying site at /demo/ for trying the flow: a "log in" button, then the returned claims.
 * It talks to the provider over HTTP with openid-client, exactly as a real site would.
 */
export function demoRouter(deps: { config: AppConfig; tenants: TenantDirectory }) {
  const router = new Router({ prefix: '/demo' });
  const registered = deps.tenants.client(DEMO_CLIENT_ID)?.client;
  let discovered: Promise<oidc.Configuration> | undefined;

  const configuration = () => {
    if (!registered) throw new BadRequestError('demo:not_configured');
    discovered ??= oidc
      .discovery(new URL(deps.config.issuer), registered.client_id, registered.client_secret, undefined, {
        execute: deps.config.issuer.startsWith('http:') ? [oidc.allowInsecureRequests] : [],
      })
      .catch((e: unknown) => {
        discovered = undefined;
        throw e;
      });
    return discovered;
  };

  const read = (ctx: Context): DemoState => {
    try {
      return JSON.parse(Buffer.from(ctx.cookies.get(COOKIE, { signed: true }) ?? '', 'base64url').toString() || '{}') as DemoState;
    } catch {
      return {};
    }
  };
  const write = (ctx: Context, s: DemoState) =>
    ctx.cookies.set(COOKIE, Buffer.from(JSON.stringify(s)).toString('base64url'), { signed: true, httpOnly: true, sameSite: 'lax', path: '/demo' });

  router.get('/', async (ctx) => {
    const s = read(ctx);
    await ctx.render('demo/index', { configured: !!registered, claims: s.claims, userinfo: s.userinfo, clientName: registered?.name });
  });

  router.post('/login', async (ctx) => {
    const cfg = await configuration();
    const verifier = oidc.randomPKCECodeVerifier();
    const s: DemoState = { verifier, state: oidc.randomState(), nonce: oidc.randomNonce() };
    write(ctx, s);
    const url = oidc.buildAuthorizationUrl(cfg, {
      redirect_uri: registered!.redirect_uris[0]!,
      scope: 'openid profile email offline_access',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state: s.state!,
      nonce: s.nonce!,
      ui_locales: ctx.state.locale,
    });
    ctx.status = 303;
    ctx.redirect(url.href);
  });

  router.get('/callback', async (ctx) => {
    const cfg = await configuration();
    const s = read(ctx);
    if (!s.verifier || !s.state) throw new BadRequestError('demo:no_login_in_progress');
    const current = new URL(ctx.originalUrl, registered!.redirect_uris[0]!);
    if (current.searchParams.get('error')) {
      write(ctx, {});
      await ctx.render('demo/index', { configured: true, error: current.searchParams.get('error'), clientName: registered?.name });
      return;
    }
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    try {
      tokens = await oidc.authorizationCodeGrant(cfg, current, { pkceCodeVerifier: s.verifier, expectedState: s.state, expectedNonce: s.nonce });
    } catch {
      throw new BadRequestError('demo:callback_failed');
    }
    const claims = tokens.claims() as Record<string, unknown> | undefined;
    const userinfo = claims ? ((await oidc.fetchUserInfo(cfg, tokens.access_token, String(claims.sub))) as Record<string, unknown>) : undefined;
    write(ctx, { idToken: tokens.id_token, claims, userinfo });
    ctx.status = 303;
    ctx.redirect('/demo/');
  });

  router.post('/logout', async (ctx) => {
    const cfg = await configuration();
    const s = read(ctx);
    write(ctx, {});
    const post = registered!.post_logout_redirect_uris[0];
    const url = oidc.buildEndSessionUrl(cfg, { ...(s.idToken ? { id_token_hint: s.idToken } : {}), ...(post ? { post_logout_redirect_uri: post } : {}) });
    ctx.status = 303;
    ctx.redirect(url.href);
  });

  return router;
}
