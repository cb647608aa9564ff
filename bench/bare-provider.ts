// The benchmark's baseline: oidc-provider with its default in-memory adapter and the smallest
// interaction of the same shape as ours (user-ID form, then an OTP form; the OTP is kept in memory
// and mailed over SMTP with nodemailer, like ours). Run by bench/login.bench.ts, not for production.
import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import nodemailer from 'nodemailer';
import Provider, { type Configuration } from 'oidc-provider';

function required(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
}

const port = Number(required('PORT'));
const issuer = required('ISSUER');
const clientId = required('CLIENT_ID');
const clientSecret = required('CLIENT_SECRET');
const redirectUri = required('REDIRECT_URI');
// A back office (client_credentials for the management scope), as registered for ours.
const backofficeId = required('BACKOFFICE_CLIENT_ID');
const backofficeSecret = required('BACKOFFICE_CLIENT_SECRET');
// Accounts are not stored: any user ID is an account whose one device is <user ID>@MAIL_DOMAIN.
const mailDomain = required('MAIL_DOMAIN');
const jwks = JSON.parse(required('JWKS')) as Configuration['jwks'];
const cookieKeys = required('COOKIE_KEYS').split(',');
// Pooled, like ours (src/mail/mail.transport.ts): up to 5 connections, each reused for many messages.
const smtp = nodemailer.createTransport({ url: required('SMTP_URL'), pool: true, maxConnections: 5 });

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      require_auth_time: true,
    },
    {
      client_id: backofficeId,
      client_secret: backofficeSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      scope: 'openid profile email offline_access management',
    },
  ],
  jwks,
  cookies: { keys: cookieKeys },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false }, clientCredentials: { enabled: true } },
  scopes: ['openid', 'offline_access', 'management'],
  claims: { openid: ['sub', 'auth_time'], profile: ['preferred_username'], email: ['email', 'email_verified'] },
  conformIdTokenClaims: false,
  // The same lifetimes as ours (and no notices about default ones).
  ttl: { AccessToken: 600, ClientCredentials: 600, AuthorizationCode: 60, IdToken: 3600, Interaction: 1800, Session: 8 * 3600, Grant: 14 * 24 * 3600, RefreshToken: 14 * 24 * 3600 },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  // Same token work as ours: a refresh token for every login, and no consent screen.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client!.clientId, accountId: ctx.oidc.session!.accountId });
    grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
    await grant.save();
    return grant;
  },
  async findAccount(_ctx, sub) {
    return { accountId: sub, claims: async () => ({ sub, preferred_username: sub, email: `${sub}@${mailDomain}`, email_verified: true }) };
  },
});

/** What one pending login has done so far; removed when it finishes. */
const pending = new Map<string, { csrf: string; userId?: string; otp?: string }>();

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function same(a: string | null | undefined, b: string | undefined): boolean {
  return typeof a === 'string' && typeof b === 'string' && a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

const page = (title: string, action: string, csrf: string, field: string) =>
  `<!doctype html><html lang="ja"><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1>` +
  `<form method="post" action="${action}"><input type="hidden" name="_csrf" value="${csrf}">` +
  `<input name="${field}" required><button type="submit">送信</button></form></body></html>`;

const ROUTE = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(identify|otp))?$/;

provider.use(async (ctx, next) => {
  if (ctx.path === '/health') {
    ctx.body = { status: 'ok' };
    return;
  }
  const m = ROUTE.exec(ctx.path);
  if (!m) return next();
  const [, uid, action] = m;
  const details = await provider.interactionDetails(ctx.req, ctx.res); // checks the interaction cookie
  if (details.uid !== uid) ctx.throw(400);
  let state = pending.get(details.uid);
  ctx.set('Cache-Control', 'no-store');

  if (ctx.method === 'GET' && !action) {
    if (!state) pending.set(details.uid, (state = { csrf: randomBytes(32).toString('base64url') }));
    ctx.type = 'html';
    ctx.body = state.otp
      ? page('ワンタイムパスワード入力', `/interaction/${uid}/otp`, state.csrf, 'otp')
      : page('ユーザID入力', `/interaction/${uid}/identify`, state.csrf, 'userId');
    return;
  }
  if (ctx.method !== 'POST' || !state) ctx.throw(400);
  const form = await readForm(ctx.req);
  if (!same(form.get('_csrf'), state!.csrf)) ctx.throw(403);

  if (action === 'identify') {
    const userId = form.get('userId') ?? '';
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(userId)) ctx.throw(400);
    state!.userId = userId;
    state!.otp = String(randomInt(0, 100_000_000)).padStart(8, '0');
    const text = `${userId} 様\n\nワンタイムパスワード：${state!.otp}\n\nこのワンタイムパスワードの有効期限は10分間です。`;
    // Delivered after the response, as ours does through its in-process queue.
    setImmediate(() => {
      smtp
        .sendMail({ from: 'no-reply@localhost', to: `${userId}@${mailDomain}`, subject: 'ワンタイムパスワードのお知らせ', text, html: `<p>${text.replace(/\n/g, '<br>')}</p>` })
        .catch((err: Error) => console.error(`mail to ${userId} failed: ${err.message}`));
    });
    ctx.status = 303;
    ctx.redirect(`/interaction/${uid}`);
    return;
  }
  if (action === 'otp') {
    if (!state!.userId || !same(form.get('otp'), state!.otp)) ctx.throw(403);
    pending.delete(details.uid);
    const to = await provider.interactionResult(ctx.req, ctx.res, { login: { accountId: state!.userId!, amr: ['otp'], remember: true } }, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(to);
    return;
  }
  ctx.throw(404);
});

const server = provider.listen(port, '127.0.0.1');
const stop = () => {
  server.close();
  server.closeAllConnections();
  smtp.close();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
