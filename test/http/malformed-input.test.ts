import { request as httpRequest, Agent as HttpAgent } from 'node:http';
import * as oidc from 'openid-client';
import { POST_LOGOUT_URI, REDIRECT_URI, startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent, csrfOf, discover, followToCallback, startLogin, submit } from '../support/browser-less.js';
import { signInToArea } from '../support/account-area.js';

/** A small seeded PRNG (mulberry32): the same requests on every run. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]! };
}
type Rng = ReturnType<typeof prng>;

interface RawRequest {
  method: string;
  /** Path and query exactly as sent (already percent-encoded where meant to be). */
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

interface RawResponse {
  status: number;
  type: string;
  body: string;
}

const httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 8 });

function send(base: string, r: RawRequest): Promise<RawResponse> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: url.hostname, port: url.port, method: r.method, path: r.path, headers: { ...r.headers, ...(r.body ? { 'content-length': String(r.body.length) } : {}) }, agent: httpAgent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'] ?? '', body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(r.body);
  });
}

/** Percent-encoded values that are malformed in one way or another (as they appear on the wire). */
const BAD_ENCODED = ['%00', 'a%00b', '%ff', '%c3', '%ed%a0%80', '%e3%81', '%', '%zz', '%0', 'x%00%00', '%c0%80', '%f4%90%80%80', '%ef%bf%bf', '%u0000'];
/** Decoded values a careless client might send (encoded before sending where needed). */
const BAD_PLAIN = ['\0', 'p-\0-x', '\u0000\u0000', 'a'.repeat(5000), 'あ'.repeat(3000), '', ' ', '\uffff', '\u202e', '<script>', "'; drop table account; --", '../../etc/passwd', '%', '{"a":1}', '0', '-1', '1e309', 'null'];
/** JSON values in place of a string. */
const BAD_JSON_VALUES: unknown[] = [['x'], ['x', 'y'], { a: 1 }, null, 1, true, '\u0000', 'a\u0000b', '\ud800', 'x\udfffy', 'a'.repeat(70_000), [[[[['deep']]]]]];
const BAD_JSON_TEXT = ['{', '{"a":', '[', 'null', '"str"', '{"userId":"\\u0000"}', '{"userId":"\\ud800"}', '{"a":1}{', '\u0000', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}'];
const CONTENT_TYPES = ['text/plain', 'application/xml', 'multipart/form-data; boundary=x', 'application/json; charset=latin1', 'application/x-www-form-urlencoded; charset=shift_jis', 'application/octet-stream', 'application/json', 'application/x-www-form-urlencoded', 'garbage', ''];

const enc = (s: string) => encodeURIComponent(s);

/** One malformed value for a query or form field, already encoded for the wire. */
function badWireValue(rng: Rng): string {
  return rng.next() < 0.5 ? rng.pick(BAD_ENCODED) : enc(rng.pick(BAD_PLAIN));
}

interface Route {
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  /** Path segments; `:name` segments are filled from the fixtures (and sometimes replaced by garbage). */
  path: string;
  /** Fields the route reads (query for GET, form or JSON for the rest). */
  fields: string[];
  kind: 'page' | 'api' | 'oidc';
  json?: boolean;
}

const ROUTES: Route[] = [
  { method: 'GET', path: '/interaction/:uid', fields: ['resent', 'lang'], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/identify', fields: ['userId'], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/otp', fields: ['otp'], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/password', fields: ['password'], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/certificate', fields: [], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/passkey', fields: ['response'], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/passkey-discover', fields: ['response'], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/resend', fields: [], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/restart', fields: [], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/consent', fields: [], kind: 'page' },
  { method: 'GET', path: '/interaction/:uid/recovery', fields: [], kind: 'page' },
  { method: 'GET', path: '/interaction/:uid/recovery/:step', fields: ['resent'], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/recovery/identify', fields: ['userId'], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/recovery/code', fields: ['otp'], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/recovery/question', fields: ['answer'], kind: 'page' },
  { method: 'POST', path: '/interaction/:uid/recovery/password', fields: ['password', 'passwordConfirm'], kind: 'page' },
  { method: 'GET', path: '/activation/:tenant', fields: ['lang'], kind: 'page' },
  { method: 'POST', path: '/activation/:tenant', fields: ['userId', 'otp'], kind: 'page' },
  { method: 'GET', path: '/activation/:tenant/register', fields: [], kind: 'page' },
  { method: 'POST', path: '/activation/:tenant/register', fields: ['questionId', 'answer', 'password', 'passwordConfirm'], kind: 'page' },
  { method: 'GET', path: '/activation/:tenant/done', fields: [], kind: 'page' },
  { method: 'GET', path: '/account/', fields: ['client_id'], kind: 'page' },
  { method: 'GET', path: '/account/login', fields: ['client_id', 'return_to'], kind: 'page' },
  { method: 'GET', path: '/account/callback', fields: ['code', 'state', 'error', 'iss'], kind: 'page' },
  { method: 'GET', path: '/account/reauth', fields: ['return_to'], kind: 'page' },
  { method: 'GET', path: '/account/history', fields: ['page'], kind: 'page' },
  { method: 'GET', path: '/account/sessions', fields: [], kind: 'page' },
  { method: 'POST', path: '/account/sessions/:uid/sign-out', fields: [], kind: 'page' },
  { method: 'GET', path: '/account/secret-question', fields: [], kind: 'page' },
  { method: 'POST', path: '/account/secret-question', fields: ['questionId', 'answer'], kind: 'page' },
  { method: 'GET', path: '/account/login-method', fields: [], kind: 'page' },
  { method: 'POST', path: '/account/login-method', fields: ['method', 'password', 'passwordConfirm'], kind: 'page' },
  { method: 'GET', path: '/account/devices/new', fields: [], kind: 'page' },
  { method: 'POST', path: '/account/devices/new', fields: ['email', 'kind'], kind: 'page' },
  { method: 'GET', path: '/account/devices/:n/verify', fields: [], kind: 'page' },
  { method: 'POST', path: '/account/devices/:n/verify', fields: ['otp'], kind: 'page' },
  { method: 'GET', path: '/account/devices/:n/edit', fields: [], kind: 'page' },
  { method: 'POST', path: '/account/devices/:n/edit', fields: ['email', 'kind'], kind: 'page' },
  { method: 'GET', path: '/account/devices/:n/done', fields: ['op'], kind: 'page' },
  { method: 'GET', path: '/account/devices/:n/delete', fields: [], kind: 'page' },
  { method: 'GET', path: '/account/devices/:n/certificate', fields: [], kind: 'page' },
  { method: 'POST', path: '/api/v1/accounts', fields: ['userId', 'loginMethod', 'devices'], kind: 'api', json: true },
  { method: 'GET', path: '/api/v1/accounts', fields: ['status', 'limit', 'cursor', 'locked'], kind: 'api' },
  { method: 'GET', path: '/api/v1/accounts/:user', fields: [], kind: 'api' },
  { method: 'PATCH', path: '/api/v1/accounts/:user', fields: ['loginMethod', 'devices'], kind: 'api', json: true },
  { method: 'DELETE', path: '/api/v1/accounts/:other', fields: [], kind: 'api' },
  { method: 'POST', path: '/api/v1/accounts/:user/activation', fields: [], kind: 'api', json: true },
  { method: 'POST', path: '/api/v1/accounts/:other/unlock', fields: [], kind: 'api', json: true },
  { method: 'GET', path: '/api/v1/accounts/:user/login-events', fields: ['limit', 'cursor', 'since'], kind: 'api' },
  { method: 'GET', path: '/api/v1/openapi.json', fields: [], kind: 'api' },
  { method: 'GET', path: '/dev/mailbox', fields: ['to'], kind: 'page' },
  { method: 'GET', path: '/dev/mailbox.json', fields: ['to'], kind: 'page' },
  { method: 'GET', path: '/dev/mailbox/:mail', fields: [], kind: 'page' },
  { method: 'GET', path: '/demo/', fields: ['user'], kind: 'page' },
  { method: 'POST', path: '/demo/login', fields: ['user', 'acr'], kind: 'page' },
  { method: 'GET', path: '/demo/callback', fields: ['code', 'state', 'iss', 'error'], kind: 'page' },
  { method: 'GET', path: '/certificates/crl', fields: [], kind: 'page' },
  { method: 'GET', path: '/certificates/ca.pem', fields: [], kind: 'page' },
  { method: 'GET', path: '/auth', fields: ['client_id', 'redirect_uri', 'response_type', 'scope', 'state', 'nonce', 'login_hint', 'code_challenge', 'code_challenge_method', 'acr_values', 'ui_locales', 'prompt', 'claims', 'max_age', 'id_token_hint'], kind: 'oidc' },
  { method: 'GET', path: '/auth/:junk', fields: [], kind: 'oidc' },
  { method: 'POST', path: '/token', fields: ['grant_type', 'code', 'redirect_uri', 'code_verifier', 'refresh_token', 'client_id', 'client_secret', 'scope'], kind: 'oidc' },
  { method: 'GET', path: '/me', fields: ['access_token'], kind: 'oidc' },
  { method: 'POST', path: '/me', fields: ['access_token'], kind: 'oidc' },
  { method: 'POST', path: '/token/introspection', fields: ['token', 'token_type_hint', 'client_id', 'client_secret'], kind: 'oidc' },
  { method: 'POST', path: '/token/revocation', fields: ['token', 'token_type_hint', 'client_id', 'client_secret'], kind: 'oidc' },
  { method: 'GET', path: '/session/end', fields: ['id_token_hint', 'post_logout_redirect_uri', 'state', 'client_id', 'ui_locales', 'logout_hint'], kind: 'oidc' },
  { method: 'POST', path: '/session/end/confirm', fields: ['xsrf', 'logout'], kind: 'oidc' },
  { method: 'GET', path: '/session/end/success', fields: ['client_id'], kind: 'oidc' },
  { method: 'GET', path: '/.well-known/openid-configuration', fields: [], kind: 'oidc' },
  { method: 'GET', path: '/jwks', fields: [], kind: 'oidc' },
];

/** Well-formed values, so that the malformed one is what the server trips over. */
const GOOD: Record<string, string> = {
  client_id: 'rp-basic',
  redirect_uri: REDIRECT_URI,
  response_type: 'code',
  scope: 'openid profile',
  code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
  code_challenge_method: 'S256',
  grant_type: 'authorization_code',
  token_type_hint: 'access_token',
  post_logout_redirect_uri: POST_LOGOUT_URI,
  ui_locales: 'ja',
  loginMethod: 'otp',
  method: 'password',
  kind: 'pc',
  questionId: '1',
  op: 'added',
};

/** What a request needs to get past the outer checks: live interaction, area session, API token. */
interface Fixtures {
  uid: string;
  /** One browser's cookies: the live interaction's and the account area's. */
  cookies: string;
  csrf: string;
  apiToken: string;
  userId: string;
  otherUserId: string;
  tenant: string;
}

function generate(rng: Rng, f: Fixtures): RawRequest {
  const route = rng.pick(ROUTES);
  const mutate = rng.int(9); // which part gets the malformed input
  const params: Record<string, string> = { uid: f.uid, tenant: f.tenant, user: enc(f.userId), other: enc(f.otherUserId), n: '1', step: 'code', mail: '1', junk: 'AAAAAAAAAAAAAAAAAAAAA' }; // junk: resuming the fixture's interaction would end it
  const segments = route.path.split('/').map((seg) => (seg.startsWith(':') ? (params[seg.slice(1)] ?? 'x') : seg));
  if (mutate === 0) {
    // A malformed path segment (a parameter or a fixed part).
    const i = 1 + rng.int(segments.length - 1);
    segments[i] = rng.next() < 0.5 ? badWireValue(rng) : `${segments[i]}${badWireValue(rng)}`;
  }
  let path = segments.join('/');

  // Fields: good placeholders, with one or more turned bad.
  const fields: Array<[string, string]> = route.fields.map((name) => [name, enc(GOOD[name] ?? (name === 'userId' ? f.userId : 'x'))]);
  if (mutate === 1 || mutate === 2) {
    const name = route.fields.length && rng.next() < 0.8 ? rng.pick(route.fields) : rng.pick(['a', 'lang', '_csrf', 'client_id', 'x']);
    const style = rng.int(5);
    if (style === 0) fields.push([name, badWireValue(rng)]);
    else if (style === 1) fields.push([`${name}[]`, '1'], [`${name}[]`, '2']);
    else if (style === 2) fields.push([`${name}[a]`, '1'], [`${name}[b][c]`, badWireValue(rng)]);
    else if (style === 3) fields.push([name, 'x'], [name, badWireValue(rng)]);
    else fields.push([badWireValue(rng), 'x']);
  }
  const headers: Record<string, string> = { 'accept-language': rng.pick(['ja', 'en', 'ja;q=x', '*', 'zz-ZZ,,;;']), accept: route.kind === 'page' ? 'text/html' : 'application/json' };

  // Credentials, as the route's callers hold them.
  const cookies = f.cookies;
  if (cookies) headers.cookie = cookies;
  if (route.kind === 'api') headers.authorization = `Bearer ${f.apiToken}`;
  if (route.kind === 'oidc' && route.method === 'POST') headers.authorization = `Basic ${Buffer.from('rp-basic:rp-basic-secret-0123456789').toString('base64')}`;
  if (mutate === 3) {
    const h = rng.int(6);
    if (h === 0) headers.cookie = `${cookies}; ${rng.pick(['_interaction', '_session', 'csrf', 'lang', 'area', 'x'])}=${rng.pick(BAD_ENCODED)}`;
    else if (h === 1) headers.authorization = rng.pick(['Bearer %00', 'Bearer a%00b', 'Basic %00', `Basic ${Buffer.from('rp-basic:\0').toString('base64')}`, `Basic ${Buffer.from('\0:x').toString('base64')}`, `Basic ${Buffer.from('%00:%ff').toString('base64')}`, 'Basic !!!', 'Bearer', `Bearer ${'a'.repeat(6000)}`]);
    else if (h === 2) headers['x-junk'] = 'y'.repeat(6000 + rng.int(2000));
    else if (h === 3) headers['accept-language'] = `${'ja,'.repeat(1000)}en`;
    else if (h === 4) headers['x-forwarded-for'] = rng.pick(['%00', '1.2.3.4, %ff', 'not-an-ip', '::1'.repeat(100)]);
    else headers['user-agent'] = rng.pick(['%00', 'ü'.repeat(2000), '\u00ff']);
  }

  let body: Buffer | undefined;
  const withCsrf = route.kind === 'page' && route.method !== 'GET' && rng.next() < 0.9;
  if (route.method === 'GET' || route.method === 'DELETE') {
    const q = fields.map(([k, v]) => `${k}=${v}`).join('&');
    if (q) path += `?${q}`;
    if (mutate === 4) path += `${q ? '&' : '?'}${rng.pick(BAD_ENCODED)}=${rng.pick(BAD_ENCODED)}`;
  } else if (route.json || (mutate >= 5 && mutate <= 6 && rng.next() < 0.5)) {
    const obj: Record<string, unknown> = Object.fromEntries(fields.map(([k, v]) => [k, safeDecode(v)]));
    if (route.path === '/api/v1/accounts' && route.method === 'POST') Object.assign(obj, { userId: `p-fz-${rng.int(1e9)}`, devices: [{ email: `fz${rng.int(1e9)}@example.test` }] });
    if (withCsrf) obj._csrf = f.csrf;
    headers['content-type'] = 'application/json';
    let text: string;
    if (mutate === 5 || mutate === 1) {
      const name = rng.pick([...route.fields, 'userId', 'devices', '_csrf']);
      const bad = rng.pick(BAD_JSON_VALUES);
      if (name === 'devices' && rng.next() < 0.5) obj.devices = [{ email: bad, kind: rng.pick(BAD_JSON_VALUES) }];
      else obj[name] = bad;
      text = JSON.stringify(obj);
    } else if (mutate === 6) text = rng.pick(BAD_JSON_TEXT);
    else text = JSON.stringify(obj);
    body = Buffer.from(text);
  } else {
    if (withCsrf) fields.push(['_csrf', enc(f.csrf)]);
    headers['content-type'] = 'application/x-www-form-urlencoded';
    let text = fields.map(([k, v]) => `${k}=${v}`).join('&');
    if (mutate === 5) text += `&${rng.pick(route.fields.length ? route.fields : ['x'])}=${rng.pick(['\0', 'a\0b', '\xff'])}`;
    body = Buffer.from(text, mutate === 5 && rng.next() < 0.5 ? 'latin1' : 'utf8');
  }
  if (mutate === 7) {
    // Wrong or missing content type for the same body.
    const ct = rng.pick(CONTENT_TYPES);
    if (ct) headers['content-type'] = ct;
    else delete headers['content-type'];
    if (!body && rng.next() < 0.5) body = Buffer.from(rng.pick(['userId=%00', '{"a":"\\u0000"}', '\0\0\0']));
  }
  if (mutate === 8) {
    // A whole bad body: raw bytes, invalid UTF-8, a NUL in the middle.
    body = Buffer.from(rng.pick(['\0', 'a=\0', '\xff\xfe', 'userId=%ff%fe', '_csrf=&userId=%00', '%%%', '&&&==&=', 'a[b][c][d][e][f][g]=1', '{"userId":["x"]}', '{"devices":{"0":{"email":"x"}}}']), 'latin1');
    headers['content-type'] ??= rng.pick(['application/x-www-form-urlencoded', 'application/json']);
  }
  return { method: route.method, path, headers, body };
}

function safeDecode(v: string): string {
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

describe('malformed input never makes a server error', () => {
  let s: TestServer;
  let rp: oidc.Configuration;
  let fixtures: Fixtures;

  beforeAll(async () => {
    s = await startTestServer({ database: 'postgres' });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
    const u = uniqueUser('fz');
    const other = uniqueUser('fz');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    await s.app.services.accounts.create({ tenantId: 't1', userId: other.userId, devices: [{ email: other.email }] });

    const area = new Agent(s.issuer);
    const areaPage = await signInToArea(s, area, u);
    expect(areaPage.status).toBe(200);
    const csrf = csrfOf(await areaPage.text());

    // A live interaction in the same browser (so the area's CSRF cookie fits its forms too).
    const login = await startLogin(rp, s.issuer, { prompt: 'login' }, area);
    const page = await area.get(login.interactionPath);
    expect(page.status).toBe(200);
    // A browser sends the resume cookie only to /auth/:uid, where it would finish the interaction.
    const cookieHeader = [...area.cookies]
      .filter(([k]) => !k.startsWith('_interaction_resume'))
      .map(([k, v]) => `${k}=${v}`)
      .join('; ');

    const backoffice = await discover(s.issuer, 'backoffice-t1', 'backoffice-t1-secret-0123456789');
    const token = await oidc.clientCredentialsGrant(backoffice, { scope: 'management' });
    fixtures = { uid: login.uid, cookies: cookieHeader, csrf, apiToken: token.access_token, userId: u.userId, otherUserId: other.userId, tenant: 't1' };
  }, 60_000);

  afterAll(async () => {
    httpAgent.destroy();
    await s?.close();
  });

  test('text PostgreSQL cannot store is refused as a 400 of the endpoint\'s kind, before any query', async () => {
    const f = fixtures;
    const basic = `Basic ${Buffer.from('rp-basic:rp-basic-secret-0123456789').toString('base64')}`;
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    const json = { 'content-type': 'application/json' };
    const auth = (extra: string) =>
      `/auth?client_id=rp-basic&redirect_uri=${enc(REDIRECT_URI)}&response_type=code&scope=openid&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&${extra}`;
    const cases: Array<{ name: string; req: RawRequest; kind: 'page' | 'oauth' | 'problem' }> = [
      { name: 'user ID (form)', kind: 'page', req: { method: 'POST', path: `/interaction/${f.uid}/identify`, headers: { ...form, cookie: f.cookies }, body: Buffer.from(`_csrf=${f.csrf}&userId=p-%00-x`) } },
      { name: 'user ID (raw NUL in form)', kind: 'page', req: { method: 'POST', path: `/interaction/${f.uid}/identify`, headers: { ...form, cookie: f.cookies }, body: Buffer.from(`_csrf=${f.csrf}&userId=p-\0-x`) } },
      { name: 'user ID (JSON)', kind: 'page', req: { method: 'POST', path: `/interaction/${f.uid}/identify`, headers: { ...json, cookie: f.cookies }, body: Buffer.from(JSON.stringify({ _csrf: f.csrf, userId: 'a\u0000b' })) } },
      { name: 'user ID (lone surrogate)', kind: 'page', req: { method: 'POST', path: '/activation/t1', headers: { ...json, cookie: f.cookies }, body: Buffer.from(`{"_csrf":"${f.csrf}","userId":"a\\ud800b"}`) } },
      { name: 'path segment', kind: 'page', req: { method: 'GET', path: `/interaction/${f.uid}%00`, headers: { cookie: f.cookies } } },
      { name: 'invalid UTF-8 in path', kind: 'page', req: { method: 'GET', path: '/activation/t%ff1', headers: {} } },
      { name: 'truncated UTF-8 in query', kind: 'page', req: { method: 'GET', path: '/account/login?client_id=rp-basic&return_to=%c3', headers: {} } },
      { name: 'client_id', kind: 'page', req: { method: 'GET', path: auth('state=s').replace('client_id=rp-basic', 'client_id=rp-basic%00'), headers: {} } },
      { name: 'state', kind: 'page', req: { method: 'GET', path: auth('state=a%00b'), headers: {} } },
      { name: 'login_hint', kind: 'page', req: { method: 'GET', path: auth('state=s&login_hint=%00'), headers: {} } },
      { name: 'cookie', kind: 'page', req: { method: 'GET', path: auth('state=s'), headers: { cookie: '_session=%00' } } },
      { name: 'end session state', kind: 'page', req: { method: 'GET', path: `/session/end?state=%00&client_id=rp-basic`, headers: {} } },
      { name: 'authorization code', kind: 'oauth', req: { method: 'POST', path: '/token', headers: { ...form, authorization: basic }, body: Buffer.from(`grant_type=authorization_code&code=a%00b&redirect_uri=${enc(REDIRECT_URI)}&code_verifier=x`) } },
      { name: 'refresh token', kind: 'oauth', req: { method: 'POST', path: '/token', headers: { ...form, authorization: basic }, body: Buffer.from('grant_type=refresh_token&refresh_token=%00') } },
      { name: 'introspected token', kind: 'oauth', req: { method: 'POST', path: '/token/introspection', headers: { ...form, authorization: basic }, body: Buffer.from('token=%00') } },
      { name: 'revoked token', kind: 'oauth', req: { method: 'POST', path: '/token/revocation', headers: { ...form, authorization: basic }, body: Buffer.from('token=x%ed%a0%80') } },
      { name: 'userinfo token in query', kind: 'oauth', req: { method: 'GET', path: '/me?access_token=%00', headers: {} } },
      { name: 'discovery query', kind: 'oauth', req: { method: 'GET', path: '/.well-known/openid-configuration?x=%ff', headers: {} } },
      { name: 'API path', kind: 'problem', req: { method: 'GET', path: `/api/v1/accounts/${enc(f.userId)}%00`, headers: { authorization: `Bearer ${f.apiToken}` } } },
      { name: 'API body', kind: 'problem', req: { method: 'POST', path: '/api/v1/accounts', headers: { ...json, authorization: `Bearer ${f.apiToken}` }, body: Buffer.from(JSON.stringify({ userId: 'p-\u0000', devices: [{ email: 'a@example.test' }] })) } },
    ];
    for (const c of cases) {
      const res = await send(s.issuer, c.req);
      const what = `${c.name}: ${res.status} ${res.body.slice(0, 300)}`;
      expect(what).toMatch(new RegExp(`^${c.name.replace(/[()]/g, '.')}: 400 `));
      if (c.kind === 'oauth') expect(JSON.parse(res.body)).toMatchObject({ error: 'invalid_request' });
      if (c.kind === 'problem') expect({ contentType: res.type, ...JSON.parse(res.body) }).toMatchObject({ contentType: expect.stringMatching(/^application\/problem\+json/), status: 400 });
      if (c.kind === 'page') expect(res.body).toContain('入力内容に誤りがあります');
    }
    // In the user's language.
    const english = await send(s.issuer, { method: 'GET', path: '/activation/t1?x=%00', headers: { 'accept-language': 'en' } });
    expect(english.status).toBe(400);
    expect(english.body).toContain('Some of what was sent is not valid.');
  });

  test('thousands of malformed requests across every route answer below 500', async () => {
    const rng = prng(20261130);
    const requests = Array.from({ length: 4000 }, () => generate(rng, fixtures));
    const failures: string[] = [];
    let sent = 0;
    const worker = async () => {
      while (sent < requests.length) {
        const r = requests[sent++]!;
        const res = await send(s.issuer, r);
        if (res.status >= 500 || res.status === 0)
          failures.push(`${res.status} ${r.method} ${r.path.slice(0, 160)} ${r.headers['content-type'] ?? ''} ${r.body?.toString('latin1').slice(0, 160) ?? ''} -> ${res.body.slice(0, 200)}`);
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));
    expect(failures).toEqual([]);

    // And the server still serves a normal login.
    const u = uniqueUser('fz');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    const before = s.smtp.messages.length;
    const login = await startLogin(rp, s.issuer);
    expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
    const res = await submit(login, 'otp', { otp: await s.smtp.otpFor(u.email, before) });
    const callback = await followToCallback(login.agent, res);
    const tokens = await oidc.authorizationCodeGrant(rp, callback, { pkceCodeVerifier: login.verifier, expectedState: login.state, expectedNonce: login.nonce });
    expect(tokens.claims()?.preferred_username).toBe(u.userId);
  }, 120_000);
});
