import type * as oidc from 'openid-client';
import { parseTenants } from '../../src/config/tenants.js';
import { startTestServer, uniqueUser, REDIRECT_URI, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { Agent, csrfOf, discover, startLogin, submit } from '../support/browser-less.js';
import { signInToArea } from '../support/account-area.js';
import { waitUntil } from '../mail/mail-store.js';

/** Tenants with one device feature off each, and one with room for only two devices. */
const tenant = (id: string, contract: string) => `
  - id: ${id}
    name: ${id}
    contract: { ${contract} }
    clients:
      - { client_id: rp-${id}, client_secret: rp-${id}-secret-0123456789, name: サイト-${id}, redirect_uris: ['${REDIRECT_URI}'] }`;
const TENANTS_YAML =
  TEST_TENANTS_YAML.trimEnd() +
  tenant('noadd', 'device_add: false, device_change: true, device_delete: true') +
  tenant('nochange', 'device_add: true, device_change: false, device_delete: true') +
  tenant('nodelete', 'device_add: true, device_change: true, device_delete: false') +
  tenant('max2', 'device_add: true, device_change: true, device_delete: true, max_devices: 2') +
  '\n';

const NOTICE_JA = '端末情報変更のお知らせ';
const LOGIN_OTP_JA = 'ワンタイムパスワードのお知らせ';
const NOT_IN_CONTRACT = 'ご契約の内容では、この操作はご利用いただけません。';

type User = { userId: string; email: string };

describe('account area: devices (add, change, delete)', () => {
  let s: TestServer;
  let rp: oidc.Configuration;

  beforeAll(async () => {
    s = await startTestServer({ tenants: parseTenants('device test tenants', TENANTS_YAML) });
    rp = await discover(s.issuer, 'rp-basic', 'rp-basic-secret-0123456789');
  });
  afterAll(async () => {
    await s?.close();
  });

  async function newUser(tenantId = 't1', extra: string[] = []): Promise<User> {
    const u = uniqueUser('dev');
    await s.app.services.accounts.create({ tenantId, userId: u.userId, devices: [{ email: u.email }, ...extra.map((e) => ({ email: e }))] });
    return u;
  }

  async function signedIn(u: User, clientId = 'rp-basic'): Promise<{ agent: Agent; top: string }> {
    const agent = new Agent(s.issuer);
    const res = await signInToArea(s, agent, u, `/account/?client_id=${clientId}`);
    expect(res.status).toBe(200);
    return { agent, top: await res.text() };
  }

  async function page(agent: Agent, path: string): Promise<{ status: number; html: string; location: string | null }> {
    const res = await agent.get(path);
    return { status: res.status, html: await res.text(), location: res.headers.get('location') };
  }

  /** Posts a form of `from` (a page whose CSRF token is used) to `path`. */
  async function post(agent: Agent, path: string, fields: Record<string, string>, from = '/account/') {
    const { html } = await page(agent, from);
    const res = await agent.post(path, { _csrf: csrfOf(html), ...fields });
    return { status: res.status, html: await res.text(), location: res.headers.get('location') };
  }

  /** 追加 → 確認 → 登録; returns the verify page path (the device is now unproven). */
  async function startAdd(agent: Agent, email: string, kind = 'pc') {
    const confirm = await post(agent, '/account/devices/new', { email, emailConfirm: email, kind }, '/account/devices/new');
    expect(confirm.status).toBe(200);
    const reg = await post(agent, '/account/devices/new/confirm', { email, kind, op: 'register' }, '/account/devices/new');
    expect(reg.status).toBe(303);
    expect(reg.location).toMatch(/^\/account\/devices\/\d+\/verify$/);
    return reg.location!;
  }

  /** The newest code mailed to `address` after `since` messages. */
  const codeFor = (address: string, since: number) => s.smtp.otpFor(address, since);

  /** Starts a relying-site login for `u` and returns who the login code was mailed to. */
  async function loginCodeRecipients(u: User, config = rp): Promise<string[]> {
    const before = s.smtp.messages.length;
    const login = await startLogin(config, s.issuer);
    expect((await submit(login, 'identify', { userId: u.userId })).status).toBe(303);
    const mail = await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= before && m.subject.includes(LOGIN_OTP_JA) && m.to.includes(u.email));
    return [...mail.to].sort();
  }

  const notices = (since: number, address: string) => s.smtp.messages.slice(since).filter((m) => m.subject.includes(NOTICE_JA) && m.to.includes(address));
  const waitNotice = (since: number, address: string, text: string) =>
    s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= since && m.subject.includes(NOTICE_JA) && m.to.includes(address) && m.text.includes(text));
  const eventsOf = async (userId: string, tenantId = 't1') => {
    const a = await s.app.services.accounts.findByUserId(tenantId, userId);
    return s.db.prisma.accountEvent.findMany({ where: { accountId: a!.id }, orderBy: { createdAt: 'asc' } });
  };
  const devicesOf = async (userId: string, tenantId = 't1') => (await s.app.services.accounts.findByUserId(tenantId, userId))!.devices;

  test('a certificate account: a newly proven device gets its own certificate; deleting it revokes the certificate', async () => {
    const u = await newUser();
    const account = (await s.app.services.accounts.findByUserId('t1', u.userId))!;
    await s.db.prisma.account.update({ where: { id: account.id }, data: { loginMethod: 'password_certificate' } });
    const { agent } = await signedIn(u);
    const newAddress = `cert-${u.email}`;
    const before = s.smtp.messages.length;
    const verifyPath = await startAdd(agent, newAddress);
    const ok = await post(agent, verifyPath, { code: await codeFor(newAddress, before) }, verifyPath);
    expect(ok.status).toBeLessThan(400);
    const device = (await devicesOf(u.userId))[1]!;
    const certs = await s.app.services.certificates.listForAccount(account.id);
    const issued = certs.find((c) => c.deviceId === device.id && c.status === 'valid');
    expect(issued).toBeDefined();
    expect((await page(agent, '/account/')).html).toContain(issued!.downloadPassword);

    const del = await post(agent, `/account/devices/${device.number}/delete`, {}, `/account/devices/${device.number}/delete`);
    expect(del.status).toBeLessThan(400);
    const after = await s.app.services.certificates.listForAccount(account.id);
    expect(after.find((c) => c.id === issued!.id)).toMatchObject({ status: 'revoked', reason: 'device_deleted' });
  });

  test('追加: form → 端末登録確認 → code to the new address → 端末登録完了; login codes reach it only once proven', async () => {
    const u = await newUser();
    const { agent, top } = await signedIn(u);
    expect(top).toContain('href="/account/devices/new"');
    const newAddress = `new-${u.email}`;

    const form = await page(agent, '/account/devices/new');
    expect(form.status).toBe(200);
    for (const text of ['端末登録', 'メールアドレス', 'メールアドレス確認', '端末種別', 'パソコン', '携帯電話', 'スマートフォン', 'お客様の利用される端末の情報を登録します。'])
      expect(form.html).toContain(text);
    expect(form.html).toMatch(/<input[^>]*value="pc"[^>]*checked/);
    expect(form.html).toContain('<label for="email">');

    // Mistakes come back next to their fields, announced and linked for screen readers.
    const mismatch = await post(agent, '/account/devices/new', { email: newAddress, emailConfirm: `x${newAddress}`, kind: 'pc' }, '/account/devices/new');
    expect(mismatch.status).toBe(400);
    expect(mismatch.html).toContain('メールアドレスとメールアドレス確認が一致しません。');
    expect(mismatch.html).toMatch(/id="emailConfirm"[^>]*aria-invalid="true"[^>]*aria-describedby="emailConfirm-error"/);
    const bad = await post(agent, '/account/devices/new', { email: 'not-an-address', emailConfirm: 'not-an-address', kind: 'pc' }, '/account/devices/new');
    expect(bad.html).toContain('メールアドレスの形式が正しくありません。');
    const same = await post(agent, '/account/devices/new', { email: u.email.toUpperCase(), emailConfirm: u.email.toUpperCase(), kind: 'pc' }, '/account/devices/new');
    expect(same.html).toContain('このメールアドレスは既に登録されています。');
    const noKind = await post(agent, '/account/devices/new', { email: newAddress, emailConfirm: newAddress, kind: 'tablet' }, '/account/devices/new');
    expect(noKind.html).toContain('端末種別を選択してください。');

    // 端末登録確認 shows what will be saved; 戻る returns to the filled-in form.
    const confirm = await post(agent, '/account/devices/new', { email: newAddress, emailConfirm: newAddress, kind: 'smartphone' }, '/account/devices/new');
    expect(confirm.status).toBe(200);
    for (const text of ['端末登録確認', '入力された情報に誤りがないか確認してください。', newAddress, 'スマートフォン', '>登録<', '>戻る<']) expect(confirm.html).toContain(text);
    expect(confirm.html).toContain(`name="email" value="${newAddress}"`);
    const back = await post(agent, '/account/devices/new/confirm', { email: newAddress, kind: 'smartphone', op: 'back' }, '/account/devices/new');
    expect(back.status).toBe(200);
    expect(back.html).toContain(`value="${newAddress}"`);
    expect(back.html).toMatch(/<input[^>]*value="smartphone"[^>]*checked/);
    expect(await devicesOf(u.userId)).toHaveLength(1);

    // 登録: the device exists, unproven; the code goes to the new address only, the notice to the old.
    const before = s.smtp.messages.length;
    const verifyPath = await startAdd(agent, newAddress, 'smartphone');
    expect(verifyPath).toBe('/account/devices/2/verify');
    const added = (await devicesOf(u.userId))[1]!;
    expect(added).toMatchObject({ number: 2, email: newAddress, kind: 'smartphone', verifiedAt: null });
    expect((await page(agent, '/account/')).html).toContain('href="/account/devices/2/verify"');
    const code = await codeFor(newAddress, before);
    const codeMail = s.smtp.messages.find((m) => m.text.includes(code))!;
    expect(codeMail.to).toEqual([newAddress]);
    expect(codeMail.subject).toContain('メールアドレス確認のお願い');
    const addedNotice = await waitNotice(before, u.email, '端末の追加');
    expect(addedNotice.to).toEqual([u.email]);
    expect(addedNotice.text).toContain(newAddress);

    // Not proven yet: a login mails its code to the old address only.
    expect(await loginCodeRecipients(u)).toEqual([u.email]);

    const verify = await page(agent, verifyPath);
    expect(verify.status).toBe(200);
    expect(verify.html).toContain('メールアドレス確認');
    expect(verify.html).toContain(newAddress);
    const wrong = await post(agent, verifyPath, { code: code === '00000000' ? '11111111' : '00000000' }, verifyPath);
    expect(wrong.status).toBe(401);
    expect(wrong.html).toContain('確認コードが一致しません。あと4回入力できます。');
    expect(wrong.html).toMatch(/id="code"[^>]*aria-invalid="true"[^>]*aria-describedby="code-error"/);

    const sinceProof = s.smtp.messages.length;
    const ok = await post(agent, verifyPath, { code }, verifyPath);
    expect(ok.status).toBe(303);
    expect(ok.location).toBe('/account/devices/2/done?op=added');
    const done = await page(agent, ok.location!);
    expect(done.status).toBe(200);
    expect(done.html).toContain('端末登録完了');
    expect(done.html).toContain('端末の登録が完了しました。');
    expect((await devicesOf(u.userId))[1]!.verifiedAt).not.toBeNull();
    // The code is single use.
    expect((await post(agent, verifyPath, { code }, '/account/')).location).toBeNull();

    // Proven: both addresses get login codes, and both hear of it.
    expect(await loginCodeRecipients(u)).toEqual([u.email, newAddress].sort());
    const verifiedNotice = await waitNotice(sinceProof, newAddress, 'メールアドレスの確認完了');
    expect([...verifiedNotice.to].sort()).toEqual([u.email, newAddress].sort());

    const events = await eventsOf(u.userId);
    expect(events.map((e) => e.type)).toEqual(['device_added', 'device_verify_failed', 'device_verified']);
    for (const e of events) expect(e).toMatchObject({ actor: 'user', sourceIp: '127.0.0.1' });
    expect(events[0]!.detail).toMatchObject({ number: 2, email: newAddress, kind: 'smartphone' });
  });

  test('wrong codes: five tries call the addition off; an expired code is refused until a new one is sent', async () => {
    const u = await newUser();
    const { agent } = await signedIn(u);
    const address = `try-${u.email}`;
    let since = s.smtp.messages.length;
    const verifyPath = await startAdd(agent, address);
    const code = await codeFor(address, since);
    const wrongCode = code === '12345678' ? '87654321' : '12345678';

    // Expired: the right code no longer works; 再送信 sends a new one that does.
    await s.db.prisma.oneTimePassword.updateMany({ where: { purpose: { startsWith: 'device_verify:' }, accountId: (await devicesOf(u.userId))[1]!.accountId }, data: { expiresAt: new Date(Date.now() - 1000) } });
    const expired = await post(agent, verifyPath, { code }, verifyPath);
    expect(expired.status).toBe(400);
    expect(expired.html).toContain('確認コードの有効期限が切れています。');
    since = s.smtp.messages.length;
    const resent = await post(agent, '/account/devices/2/resend', {}, verifyPath);
    expect(resent.location).toBe('/account/devices/2/verify?sent=1');
    expect((await page(agent, resent.location!)).html).toContain('確認コードを再送信しました。');
    const fresh = await codeFor(address, since);
    // The first code is retired by the new one.
    expect((await post(agent, verifyPath, { code }, verifyPath)).status).toBe(401);

    for (let left = 3; left >= 1; left--) {
      const r = await post(agent, verifyPath, { code: wrongCode }, verifyPath);
      expect(r.status).toBe(401);
      expect(r.html).toContain(`あと${left}回入力できます。`);
    }
    since = s.smtp.messages.length;
    const fifth = await post(agent, verifyPath, { code: wrongCode }, verifyPath);
    expect(fifth.status).toBe(409);
    expect(fifth.html).toContain('確認コードの入力を5回誤ったため、この手続きを取り消しました。お手数ですが、最初からやり直してください。');
    // Given up: the unproven device is gone, even the right code no longer helps, and the user is told.
    expect(await devicesOf(u.userId)).toHaveLength(1);
    expect((await post(agent, verifyPath, { code: fresh }, '/account/')).status).toBe(404);
    await waitNotice(since, u.email, '確認コードの誤入力');
    const types = (await eventsOf(u.userId)).map((e) => e.type);
    expect(types.filter((t) => t === 'device_verify_failed')).toHaveLength(5);
    expect(types.at(-1)).toBe('device_deleted');

    // Starting again works with a fresh count.
    since = s.smtp.messages.length;
    const again = await startAdd(agent, address);
    const r = await post(agent, again, { code: wrongCode }, again);
    expect(r.html).toContain('あと4回入力できます。');
    expect((await post(agent, again, { code: await codeFor(address, since) }, again)).status).toBe(303);
  });

  test('an address whose mail server refuses the code for good: the code page says it could not be sent, at once', async () => {
    const u = await newUser();
    const { agent } = await signedIn(u);
    const address = `nobody-${u.email}`;
    s.smtp.refuse(address);
    const verifyPath = await startAdd(agent, address);
    // Given up at the first refusal (a 550, not worth retrying), and recorded on the code.
    const { id: accountId } = (await s.db.prisma.account.findFirst({ where: { tenantId: 't1', userId: u.userId } }))!;
    await waitUntil(() => s.db.prisma.oneTimePassword.findFirst({ where: { accountId, purpose: { startsWith: 'device_verify:' }, deliveryFailedAt: { not: null } } }), 'the code marked undelivered', 5_000);
    const shown = await page(agent, verifyPath);
    expect(shown.status).toBe(200);
    expect(shown.html).toContain(`【エラー】${address} 宛てに確認コードを送信できませんでした。`);
    expect(shown.html).toMatch(/<p class="error" id="undelivered">/);
    const en = await page(agent, `${verifyPath}?lang=en`);
    expect(en.html).toContain(`[Error] The confirmation code could not be sent to ${address}.`);
    // Called off, and added again with another address: the new code's page has no such error.
    const second = `other-${u.email}`;
    const since = s.smtp.messages.length;
    const cancelled = await post(agent, `${verifyPath.replace(/\/verify$/, '')}/cancel`, {}, verifyPath);
    expect(cancelled.status).toBe(200);
    const next = await startAdd(agent, second);
    await codeFor(second, since);
    expect((await page(agent, next)).html).not.toContain('id="undelivered"');
  });

  test('変更: a new address waits until proven (the old one keeps getting codes); a kind change applies at once', async () => {
    const second = `second-${Date.now()}@example.test`;
    const u = await newUser('t1', [second]);
    const { agent, top } = await signedIn(u);
    expect(top).toContain('href="/account/devices/2/edit"');

    const edit = await page(agent, '/account/devices/2/edit');
    expect(edit.status).toBe(200);
    expect(edit.html).toContain('端末情報変更');
    expect(edit.html).toContain(`value="${second}"`);

    // Only the kind: no code, applied at once.
    let since = s.smtp.messages.length;
    const kindConfirm = await post(agent, '/account/devices/2/edit', { email: second, emailConfirm: second, kind: 'mobile' }, '/account/devices/2/edit');
    expect(kindConfirm.html).toContain('端末情報変更確認');
    expect(kindConfirm.html).toContain('携帯電話');
    const kindDone = await post(agent, '/account/devices/2/edit/confirm', { email: second, kind: 'mobile', op: 'register' }, '/account/devices/2/edit');
    expect(kindDone.location).toBe('/account/devices/2/done?op=changed');
    expect((await page(agent, kindDone.location!)).html).toContain('端末情報変更完了');
    expect((await devicesOf(u.userId))[1]).toMatchObject({ kind: 'mobile', email: second, pendingEmail: null });
    await waitNotice(since, second, '端末情報の変更');
    const nothing = await post(agent, '/account/devices/2/edit', { email: second, emailConfirm: second, kind: 'mobile' }, '/account/devices/2/edit');
    expect(nothing.status).toBe(400);
    expect(nothing.html).toContain('変更内容がありません。');

    // A new address: pending, proven by a code to it, while the old address keeps working.
    const replacement = `replaced-${u.email}`;
    since = s.smtp.messages.length;
    await post(agent, '/account/devices/2/edit', { email: replacement, emailConfirm: replacement, kind: 'mobile' }, '/account/devices/2/edit');
    const changed = await post(agent, '/account/devices/2/edit/confirm', { email: replacement, kind: 'mobile', op: 'register' }, '/account/devices/2/edit');
    expect(changed.location).toBe('/account/devices/2/verify');
    expect((await devicesOf(u.userId))[1]).toMatchObject({ email: second, pendingEmail: replacement });
    const code = await codeFor(replacement, since);
    const changeNotice = await waitNotice(since, second, '端末情報の変更');
    expect([...changeNotice.to].sort()).toEqual([u.email, second].sort());
    expect((await page(agent, '/account/')).html).toContain(`確認待ちのメールアドレス: ${replacement}`);
    expect(await loginCodeRecipients(u)).toEqual([u.email, second].sort());

    since = s.smtp.messages.length;
    const ok = await post(agent, '/account/devices/2/verify', { code }, '/account/devices/2/verify');
    expect(ok.location).toBe('/account/devices/2/done?op=changed');
    expect((await devicesOf(u.userId))[1]).toMatchObject({ email: replacement, pendingEmail: null });
    // Old and new address both hear of it; from now on only the new one gets codes.
    const proven = await waitNotice(since, replacement, 'メールアドレスの確認完了');
    expect([...proven.to].sort()).toEqual([u.email, second, replacement].sort());
    expect(await loginCodeRecipients(u)).toEqual([u.email, replacement].sort());

    const types = (await eventsOf(u.userId)).map((e) => e.type);
    expect(types).toEqual(['device_changed', 'device_changed', 'device_verified']);
  });

  test('削除: a confirmation page, then the address gets no more codes; the last device cannot be deleted', async () => {
    const second = `gone-${Date.now()}@example.test`;
    const u = await newUser('t1', [second]);
    const { agent, top } = await signedIn(u);
    expect(top).toContain('href="/account/devices/2/delete"');
    expect(await loginCodeRecipients(u)).toEqual([u.email, second].sort());

    const confirm = await page(agent, '/account/devices/2/delete');
    expect(confirm.status).toBe(200);
    expect(confirm.html).toContain('端末削除確認');
    expect(confirm.html).toContain(second);
    expect(await devicesOf(u.userId)).toHaveLength(2);

    const since = s.smtp.messages.length;
    const done = await post(agent, '/account/devices/2/delete', {}, '/account/devices/2/delete');
    expect(done.status).toBe(200);
    expect(done.html).toContain('端末削除完了');
    expect(await devicesOf(u.userId)).toHaveLength(1);
    expect(await loginCodeRecipients(u)).toEqual([u.email]);
    // The removed address is told too (it may not have been its owner's doing).
    const notice = await waitNotice(since, second, '端末の削除');
    expect([...notice.to].sort()).toEqual([u.email, second].sort());
    expect((await eventsOf(u.userId)).map((e) => e.type)).toEqual(['device_deleted']);

    // The last device: the page says why, there is no button, and a forged post is refused.
    const last = await page(agent, '/account/devices/1/delete');
    expect(last.status).toBe(200);
    expect(last.html).toContain('最後の端末は削除できません。');
    expect(last.html).not.toContain('id="delete"');
    const forged = await post(agent, '/account/devices/1/delete', {}, '/account/');
    expect(forged.status).toBe(409);
    expect(forged.html).toContain('最後の端末は削除できません。');
    expect(await devicesOf(u.userId)).toHaveLength(1);
    expect(notices(since, u.email).filter((m) => m.text.includes('端末No 1'))).toHaveLength(0);
  });

  test('deleting a proven address retires login codes already mailed to it', async () => {
    const second = `inflight-${Date.now()}@example.test`;
    const u = await newUser('t1', [second]);
    const { agent } = await signedIn(u);
    const before = s.smtp.messages.length;
    const login = await startLogin(rp, s.issuer);
    await submit(login, 'identify', { userId: u.userId });
    const code = await codeFor(second, before);
    await post(agent, '/account/devices/2/delete', {}, '/account/devices/2/delete');
    const res = await submit(login, 'otp', { otp: code });
    expect(res.status).toBe(401);
    expect(await res.text()).toContain('認証に失敗しました');
  });

  test('max_devices: at the maximum there is no 追加 link and even a forged registration is refused', async () => {
    const u = await newUser('max2', [`two-${Date.now()}@example.test`]);
    const { agent, top } = await signedIn(u, 'rp-max2');
    expect(top).not.toContain('href="/account/devices/new"');
    const form = await page(agent, '/account/devices/new');
    expect(form.status).toBe(409);
    expect(form.html).toContain('登録できる端末は2台までです。');
    const forged = await post(agent, '/account/devices/new/confirm', { email: `three-${u.email}`, kind: 'pc', op: 'register' });
    expect(forged.status).toBe(409);
    expect(forged.html).toContain('登録できる端末は2台までです。');
    expect(await devicesOf(u.userId, 'max2')).toHaveLength(2);

    // One below the maximum, the second device fills it (an unproven one counts too).
    const v = await newUser('max2');
    const { agent: a2 } = await signedIn(v, 'rp-max2');
    await startAdd(a2, `pending-${v.email}`);
    const full = await post(a2, '/account/devices/new/confirm', { email: `more-${v.email}`, kind: 'pc', op: 'register' });
    expect(full.status).toBe(409);
    expect(await devicesOf(v.userId, 'max2')).toHaveLength(2);
  });

  test.each([
    ['noadd', 'href="/account/devices/new"', '/account/devices/new/confirm', { email: 'forged@example.test', kind: 'pc', op: 'register' }, '/account/devices/new'],
    ['nochange', 'href="/account/devices/2/edit"', '/account/devices/2/edit/confirm', { email: 'forged@example.test', kind: 'pc', op: 'register' }, '/account/devices/2/edit'],
    ['nodelete', 'href="/account/devices/2/delete"', '/account/devices/2/delete', {}, '/account/devices/2/delete'],
  ] as const)('contract without %s: no link, and a forged request gets a clear 403', async (tenantId, link, postPath, fields, getPath) => {
    const u = await newUser(tenantId, [`other-${Date.now()}@example.test`]);
    const { agent, top } = await signedIn(u, `rp-${tenantId}`);
    expect(top).toContain(u.email);
    expect(top).not.toContain(link);
    const get = await page(agent, getPath);
    expect(get.status).toBe(403);
    expect(get.html).toContain(NOT_IN_CONTRACT);
    const forged = await post(agent, postPath, { ...fields });
    expect(forged.status).toBe(403);
    expect(forged.html).toContain(NOT_IN_CONTRACT);
    const after = await devicesOf(u.userId, tenantId);
    expect(after.map((d) => [d.email, d.kind])).toEqual([
      [u.email, 'pc'],
      [expect.stringMatching(/^other-/), 'pc'],
    ]);
    expect(await eventsOf(u.userId, tenantId)).toHaveLength(0);
  });

  test('proving a pending address belongs to 変更: with it off, the code page and its posts are 403 too', async () => {
    const u = await newUser('nochange', [`p-${Date.now()}@example.test`]);
    const account = (await s.app.services.accounts.findByUserId('nochange', u.userId))!;
    await s.db.prisma.device.update({ where: { id: account.devices[1]!.id }, data: { pendingEmail: `pending-${u.email}` } });
    const { agent } = await signedIn(u, 'rp-nochange');
    expect((await page(agent, '/account/devices/2/verify')).status).toBe(403);
    for (const action of ['verify', 'resend', 'cancel']) expect((await post(agent, `/account/devices/2/${action}`, { code: '12345678' })).status).toBe(403);
  });

  test('CSRF: every state-changing post without a valid token is refused', async () => {
    const u = await newUser('t1', [`csrf-${Date.now()}@example.test`]);
    const { agent } = await signedIn(u);
    const since = s.smtp.messages.length;
    const verifyPath = await startAdd(agent, `csrf-new-${u.email}`);
    await codeFor(`csrf-new-${u.email}`, since);
    const posts: Array<[string, Record<string, string>]> = [
      ['/account/devices/new', { email: `x-${u.email}`, emailConfirm: `x-${u.email}`, kind: 'pc' }],
      ['/account/devices/new/confirm', { email: `x-${u.email}`, kind: 'pc', op: 'register' }],
      [verifyPath, { code: '12345678' }],
      ['/account/devices/3/resend', {}],
      ['/account/devices/3/cancel', {}],
      ['/account/devices/2/edit', { email: `y-${u.email}`, emailConfirm: `y-${u.email}`, kind: 'pc' }],
      ['/account/devices/2/edit/confirm', { email: `y-${u.email}`, kind: 'smartphone', op: 'register' }],
      ['/account/devices/2/delete', {}],
    ];
    const before = await devicesOf(u.userId);
    for (const [path, fields] of posts) {
      for (const token of [undefined, 'A'.repeat(43)]) {
        const res = await agent.post(path, token ? { _csrf: token, ...fields } : fields);
        expect([path, res.status]).toEqual([path, 403]);
        expect(await res.text()).toContain('不正な送信です');
      }
    }
    expect(await devicesOf(u.userId)).toEqual(before);
    expect((await eventsOf(u.userId)).map((e) => e.type)).toEqual(['device_added']);
  });

  test('the pages belong to the signed-in account only: another account’s device number is its own', async () => {
    const u = await newUser();
    const { agent } = await signedIn(u);
    expect((await page(agent, '/account/devices/7/edit')).status).toBe(404);
    expect((await page(agent, '/account/devices/x/delete')).status).toBe(404);
    const anon = new Agent(s.issuer);
    const res = await anon.get('/account/devices/new');
    expect(res.status).toBe(303);
    expect(res.headers.get('location')).toMatch(/^\/account\/login\?return=%2Faccount%2Fdevices%2Fnew/);
  });

  test('English pages', async () => {
    const u = await newUser();
    const { agent } = await signedIn(u);
    const res = await agent.get('/account/devices/new?lang=en');
    const html = await res.text();
    for (const text of ['Add a device', 'E-mail address (again)', 'Device type', 'Smartphone', 'Mobile phone']) expect(html).toContain(text);
  });
});

describe('account area: devices need a recent sign-in', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ env: { ACCOUNT_REAUTH_AGE: '0' } });
  });
  afterAll(async () => {
    await s?.close();
  });

  test('a stale sign-in is sent to re-authenticate before any change', async () => {
    const u = uniqueUser('devstale');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }, { email: `2-${u.email}` }] });
    const agent = new Agent(s.issuer);
    const top = await signInToArea(s, agent, u);
    // With ACCOUNT_REAUTH_AGE=0 any sign-in already in the past is stale (auth_time is whole seconds).
    const csrf = csrfOf(await top.text());

    const get = await agent.get('/account/devices/new');
    expect(get.status).toBe(303);
    expect(get.headers.get('location')).toBe(`/account/reauth?return=${encodeURIComponent('/account/devices/new')}`);
    const cases: Array<[string, Record<string, string>, string]> = [
      ['/account/devices/new/confirm', { email: `n-${u.email}`, kind: 'pc', op: 'register' }, '/account/devices/new'],
      ['/account/devices/2/edit/confirm', { email: `c-${u.email}`, kind: 'pc', op: 'register' }, '/account/devices/2/edit'],
      ['/account/devices/2/delete', {}, '/account/devices/2/delete'],
    ];
    for (const [path, fields, back] of cases) {
      const res = await agent.post(path, { _csrf: csrf, ...fields });
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe(`/account/reauth?return=${encodeURIComponent(back)}`);
    }
    const account = (await s.app.services.accounts.findByUserId('t1', u.userId))!;
    expect(account.devices.map((d) => [d.email, d.pendingEmail])).toEqual([
      [u.email, null],
      [`2-${u.email}`, null],
    ]);
  });
});
