import { readFileSync } from 'node:fs';
import { hashSecret, normalizeAnswer, verifySecret } from '../../src/credentials/hashing.js';
import { formatEventTime } from '../../src/history/event-time.js';
import { LOGIN_RESULTS } from '../../src/history/login-event.service.js';
import { HISTORY_PAGE_SIZE, oneMonthBefore } from '../../src/history/login-history.service.js';
import { startHousekeeping } from '../../src/housekeeping.js';
import { translator } from '../../src/i18n/index.js';
import { createLogger } from '../../src/logger.js';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { Agent, csrfOf } from '../support/browser-less.js';
import { signInToArea } from '../support/account-area.js';

const DAY = 24 * 3600_000;

/** The rows of the history table: [datetime attribute, 日時, IP, 結果, サイト, 方法]. */
function historyRows(html: string): string[][] {
  const body = /<tbody>([\s\S]*?)<\/tbody>/.exec(html)?.[1] ?? '';
  return [...body.matchAll(/<tr[^>]*>([\s\S]*?)<\/tr>/g)].map((tr) => {
    const cells = [...tr[1]!.matchAll(/<td>([\s\S]*?)<\/td>/g)].map((td) => td[1]!);
    const time = /<time datetime="([^"]+)">([^<]*)<\/time>/.exec(cells[0] ?? '');
    return [time?.[1] ?? '', time?.[2] ?? '', ...cells.slice(1)];
  });
}

const textOf = (html: string, id: string) => new RegExp(`id="${id}"[^>]*>([^<]*)<`).exec(html)?.[1];

describe('account area: secret question change and login history', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer();
  });
  afterAll(async () => {
    await s?.close();
  });

  /** An active account whose secret question is first_pet / ぽち; device 2 is not proven yet. */
  async function newUser() {
    const u = uniqueUser('sq');
    const account = await s.app.services.accounts.create({
      tenantId: 't1',
      userId: u.userId,
      devices: [{ email: u.email }, { email: `2-${u.email}`, kind: 'smartphone', verified: false }],
    });
    await s.app.services.accounts.setSecretQuestion(account.id, 'first_pet', await hashSecret(normalizeAnswer('ぽち')));
    return { ...u, id: account.id };
  }

  describe('秘密の質問・答え変更', () => {
    test('form → confirmation → 変更 → 完了: new question and hash, loose answer, event and notice mail', async () => {
      const u = await newUser();
      const agent = new Agent(s.issuer);
      await signInToArea(s, agent, u);
      const before = await s.db.prisma.account.findUniqueOrThrow({ where: { id: u.id } });

      const form = await agent.get('/account/secret-question');
      expect(form.status).toBe(200);
      let html = await form.text();
      expect(html).toContain('現在登録されている秘密の質問と答えの変更を行います。新たに秘密の質問を選択し、その答えを入力してください。');
      expect(textOf(html, 'user-id')).toBe(u.userId);
      expect(html).toMatch(/<option value="first_pet" selected[^>]*>初めて飼ったペットの名前は？<\/option>/);
      expect(html).toMatch(/<a href="\/account\/secret-question" aria-current="page">秘密の質問・答え変更<\/a>/);

      // A missing answer is refused at the field, keeping the chosen question.
      const empty = await agent.post('/account/secret-question', { _csrf: csrfOf(html), questionId: 'birthplace', answer: '   ' });
      expect(empty.status).toBe(400);
      html = await empty.text();
      expect(html).toContain('秘密の質問答えを入力してください。');
      expect(html).toMatch(/<option value="birthplace" selected/);
      const unknown = await agent.post('/account/secret-question', { _csrf: csrfOf(html), questionId: 'favourite_band', answer: 'x' });
      expect(unknown.status).toBe(400);
      expect(await unknown.text()).toContain('秘密の質問は一覧から選択してください。');
      const tooLong = await agent.post('/account/secret-question', { _csrf: csrfOf(html), questionId: 'birthplace', answer: 'あ'.repeat(101) });
      expect(tooLong.status).toBe(400);
      expect(await tooLong.text()).toContain('100文字以内');

      // Full-width, padded, mixed case: stored normalised, so "yokohama" answers it later.
      const answer = '  Ｙｏｋｏ　ＨＡＭＡ  ';
      const next = await agent.post('/account/secret-question', { _csrf: csrfOf(html), questionId: 'birthplace', answer });
      expect(next.status).toBe(303);
      expect(next.headers.get('location')).toBe('/account/secret-question/confirm');
      const confirm = await agent.get('/account/secret-question/confirm');
      expect(confirm.status).toBe(200);
      html = await confirm.text();
      expect(textOf(html, 'question')).toBe('生まれた市区町村は？');
      expect(html).toContain('変更');
      for (const echo of ['Ｙｏｋｏ', 'yoko', 'HAMA']) expect(html.toLowerCase()).not.toContain(echo.toLowerCase());
      // Nothing is saved before 変更, and the pending answer travels sealed, not readable.
      expect((await s.db.prisma.account.findUniqueOrThrow({ where: { id: u.id } })).secretAnswerHash).toBe(before.secretAnswerHash);
      const sealed = agent.cookies.get('secret_question_change') ?? '';
      expect(sealed).not.toBe('');
      expect(Buffer.from(sealed, 'base64url').toString('latin1')).not.toMatch(/argon2|scrypt|birthplace/);

      // Back to the form: the question being changed to is chosen, the answer is not refilled.
      const back = await (await agent.get('/account/secret-question')).text();
      expect(back).toMatch(/<option value="birthplace" selected/);
      expect(back).not.toMatch(/name="answer"[^>]*value=/);

      const mailsBefore = s.smtp.messages.length;
      const change = await agent.post('/account/secret-question/confirm', { _csrf: csrfOf(html) });
      expect(change.status).toBe(303);
      expect(change.headers.get('location')).toBe('/account/secret-question/done');
      const done = await (await agent.get('/account/secret-question/done')).text();
      expect(done).toContain('秘密の質問・答え変更完了');
      expect(textOf(done, 'question')).toBe('生まれた市区町村は？');

      const after = await s.db.prisma.account.findUniqueOrThrow({ where: { id: u.id } });
      expect(after.secretQuestionId).toBe('birthplace');
      expect(after.secretAnswerHash).not.toBe(before.secretAnswerHash);
      expect(await verifySecret(normalizeAnswer('yoko hama'), after.secretAnswerHash)).toBe(true);
      expect(await verifySecret(normalizeAnswer('ぽち'), after.secretAnswerHash)).toBe(false);

      const events = await s.db.prisma.accountEvent.findMany({ where: { accountId: u.id, type: 'secret_question_changed' } });
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ actor: 'user', detail: { from: 'first_pet', to: 'birthplace' } });
      expect(JSON.stringify(events[0]!.detail)).not.toMatch(/yoko|argon2|scrypt/i);

      const mail = await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= mailsBefore && m.to.includes(u.email));
      expect(mail.subject).toBe('【あんしんログインサービス】秘密の質問・答え変更のお知らせ');
      expect(mail.text).toContain(`${u.userId} 様`);
      expect(mail.text).toContain('アクセス元IP：127.0.0.1');
      expect(mail.text).toMatch(/日時：\d{4}\/\d{2}\/\d{2} \d{2}:\d{2}:\d{2}（日本時間）/);
      // Only proven addresses are told.
      expect(mail.to).not.toContain(`2-${u.email}`);

      // A second 変更 (double click, replay) changes nothing more.
      const again = await agent.post('/account/secret-question/confirm', { _csrf: csrfOf(html) });
      expect(again.status).toBe(409);
      expect(await again.text()).toContain('すでに変更済みです');
      expect(await s.db.prisma.accountEvent.count({ where: { accountId: u.id, type: 'secret_question_changed' } })).toBe(1);
      // And the confirmation page without a pending change goes back to the form.
      const noPending = await agent.get('/account/secret-question/confirm');
      expect(noPending.status).toBe(303);
      expect(noPending.headers.get('location')).toBe('/account/secret-question');
    });

    test('English pages and notice', async () => {
      const u = await newUser();
      const agent = new Agent(s.issuer);
      await signInToArea(s, agent, u);
      const html = await (await agent.get('/account/secret-question', { 'accept-language': 'en' })).text();
      expect(html).toContain('Choose a new secret question and enter its answer.');
      await agent.post('/account/secret-question', { _csrf: csrfOf(html), questionId: 'first_teacher', answer: 'Tanaka' }, { 'accept-language': 'en' });
      const confirm = await (await agent.get('/account/secret-question/confirm', { 'accept-language': 'en' })).text();
      expect(textOf(confirm, 'question')).toBe('What was the surname of your first teacher?');
      const mailsBefore = s.smtp.messages.length;
      expect((await agent.post('/account/secret-question/confirm', { _csrf: csrfOf(confirm) }, { 'accept-language': 'en' })).status).toBe(303);
      const mail = await s.smtp.waitFor((m) => s.smtp.messages.indexOf(m) >= mailsBefore && m.to.includes(u.email));
      expect(mail.subject).toBe('[Anshin Login Service] Your secret question was changed');
      expect(mail.text).toMatch(/Time: \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC/);
    });

    test('a POST without a valid CSRF token is refused and changes nothing', async () => {
      const u = await newUser();
      const agent = new Agent(s.issuer);
      await signInToArea(s, agent, u);
      const html = await (await agent.get('/account/secret-question')).text();
      const before = await s.db.prisma.account.findUniqueOrThrow({ where: { id: u.id } });

      expect((await agent.post('/account/secret-question', { questionId: 'birthplace', answer: 'x' })).status).toBe(403);
      expect((await agent.post('/account/secret-question', { _csrf: 'A'.repeat(43), questionId: 'birthplace', answer: 'x' })).status).toBe(403);
      // With a prepared change waiting, a forged 変更 still fails.
      expect((await agent.post('/account/secret-question', { _csrf: csrfOf(html), questionId: 'birthplace', answer: 'x' })).status).toBe(303);
      expect((await agent.post('/account/secret-question/confirm', {})).status).toBe(403);
      expect((await agent.post('/account/secret-question/confirm', { _csrf: csrfOf(html).slice(1) + 'A' })).status).toBe(403);

      const after = await s.db.prisma.account.findUniqueOrThrow({ where: { id: u.id } });
      expect(after.secretQuestionId).toBe('first_pet');
      expect(after.secretAnswerHash).toBe(before.secretAnswerHash);
      expect(await s.db.prisma.accountEvent.count({ where: { accountId: u.id, type: 'secret_question_changed' } })).toBe(0);
    });

    test('without an area session the pages send the user to sign in', async () => {
      const agent = new Agent(s.issuer);
      const res = await agent.get('/account/secret-question');
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe(`/account/login?return=${encodeURIComponent('/account/secret-question')}`);
      expect((await agent.get('/account/history?page=2')).headers.get('location')).toBe(`/account/login?return=${encodeURIComponent('/account/history?page=2')}`);
    });
  });

  describe('ログイン履歴閲覧', () => {
    test('the last month, newest first, 20 a page, with the manual counters; older and other accounts\' events stay out', async () => {
      expect(HISTORY_PAGE_SIZE).toBe(20);
      const u = await newUser();
      const other = await newUser();
      const agent = new Agent(s.issuer);
      await signInToArea(s, agent, u); // one success event, now, through the account console
      const now = Date.now();
      const at = (ms: number) => new Date(Math.floor(ms / 1000) * 1000);
      const base = { tenantId: 't1', submittedUserId: u.userId, userAgent: 'test' };
      const results = ['wrong_otp', 'success', 'locked', 'expired_otp'] as const;
      // 40 events, an hour apart, newest first: i = 0 is an hour ago.
      const inserted = Array.from({ length: 40 }, (_, i) => ({
        ...base,
        accountId: u.id,
        createdAt: at(now - (i + 1) * 3600_000),
        sourceIp: `198.51.100.${i + 1}`,
        result: results[i % results.length]!,
        clientId: i % 2 ? 'rp-basic' : 'rp-post',
        method: 'otp',
      }));
      await s.db.prisma.loginEvent.createMany({
        data: [
          ...inserted,
          // Older than a month (kept: within retention) and older than the retention: never shown.
          { ...base, accountId: u.id, createdAt: at(now - 40 * DAY), sourceIp: '203.0.113.40', result: 'success', clientId: 'rp-basic', method: 'otp' },
          { ...base, accountId: u.id, createdAt: at(now - 100 * DAY), sourceIp: '203.0.113.100', result: 'success', clientId: 'rp-basic', method: 'otp' },
          // Another account's event, a minute ago.
          { ...base, accountId: other.id, submittedUserId: other.userId, createdAt: at(now - 60_000), sourceIp: '192.0.2.99', result: 'success', clientId: 'rp-basic', method: 'otp' },
        ],
      });

      const page1 = await agent.get('/account/history');
      expect(page1.status).toBe(200);
      let html = await page1.text();
      expect(html).toContain('お客様の直近1ヶ月のログイン履歴を表示しています。');
      for (const col of ['日時', 'アクセス元IP', 'ログイン結果', 'ご利用のWebサイト', 'ログイン方法']) expect(html).toContain(`<th scope="col">${col}</th>`);
      expect(textOf(html, 'count')).toBe('1～20/41件');
      expect(textOf(html, 'pages')).toBe('1/3ページ');
      expect(html).not.toContain('id="prev"');
      expect(html).toContain('href="/account/history?page=2"');
      expect(html).toMatch(/<a href="\/account\/history" aria-current="page">ログイン履歴閲覧<\/a>/);

      const rows1 = historyRows(html);
      expect(rows1).toHaveLength(20);
      // Newest first: this sign-in, through the account console with the mailed OTP.
      expect(rows1[0]!.slice(3)).toEqual(['ログイン成功', 'アカウント管理', 'ワンタイムパスワード']);
      expect(rows1[0]![2]).toBe('127.0.0.1');
      // Then the inserted ones, in order, with Japan time as the manual prints it.
      const jst = (d: Date) => new Date(d.getTime() + 9 * 3600_000).toISOString().slice(0, 19).replace('T', ' ').replaceAll('-', '/');
      expect(rows1[1]).toEqual([inserted[0]!.createdAt.toISOString(), jst(inserted[0]!.createdAt), '198.51.100.1', 'ワンタイムパスワード誤り', '利用サイトB', 'ワンタイムパスワード']);
      expect(rows1[2]!.slice(2, 5)).toEqual(['198.51.100.2', 'ログイン成功', '利用サイトA']);
      expect(rows1[3]![3]).toBe('アカウントロック');
      expect(rows1[4]![3]).toBe('ワンタイムパスワード有効期限切れ');

      const page2 = await agent.get('/account/history?page=2');
      html = await page2.text();
      expect(textOf(html, 'count')).toBe('21～40/41件');
      expect(textOf(html, 'pages')).toBe('2/3ページ');
      expect(html).toContain('href="/account/history?page=1"');
      expect(html).toContain('href="/account/history?page=3"');
      const rows2 = historyRows(html);
      expect(rows2.map((r) => r[2])).toEqual(inserted.slice(19, 39).map((e) => e.sourceIp));

      const page3 = await (await agent.get('/account/history?page=3')).text();
      const rows3 = historyRows(page3);
      expect(textOf(page3, 'count')).toBe('41～41/41件');
      expect(rows3.map((r) => r[2])).toEqual(['198.51.100.40']);
      expect(page3).not.toContain('id="next"');

      const all = [...rows1, ...rows2, ...rows3];
      const times = all.map((r) => Date.parse(r[0]!));
      expect(times).toEqual([...times].sort((a, b) => b - a));
      for (const hidden of ['203.0.113.40', '203.0.113.100', '192.0.2.99']) expect(all.map((r) => r[2])).not.toContain(hidden);

      // Past the end: the last page, not an error; nonsense: the first page.
      for (const q of ['99', '99999999999999999999999']) {
        const res = await agent.get(`/account/history?page=${q}`);
        expect(res.status).toBe(200);
        const body = await res.text();
        expect(textOf(body, 'pages')).toBe('3/3ページ');
        expect(textOf(body, 'count')).toBe('41～41/41件');
      }
      for (const q of ['0', '-1', 'abc', '1.5', '']) expect(textOf(await (await agent.get(`/account/history?page=${q}`)).text(), 'pages')).toBe('1/3ページ');

      // English: UTC, said so; same counters in English words.
      const en = await (await agent.get('/account/history?page=2&lang=en')).text();
      expect(en).toContain('Your logins of the last month.');
      expect(textOf(en, 'count')).toBe('21–40 of 41');
      expect(textOf(en, 'pages')).toBe('Page 2 of 3');
      const enRow = historyRows(en)[0]!;
      expect(enRow[1]).toBe(`${inserted[19]!.createdAt.toISOString().slice(0, 19).replace('T', ' ')} UTC`);
      expect(enRow.slice(3)).toEqual(['One-time password expired', '利用サイトA', 'One-time password']);
      expect(historyRows(await (await agent.get('/account/history?lang=en')).text())[0]!.slice(3)).toEqual(['Login succeeded', 'Account area', 'One-time password']);
      agent.cookies.delete('lang');

      // Retention: housekeeping purges what is past LOGIN_EVENT_RETENTION_DAYS (90 by default) only.
      expect(s.config.loginEventRetentionDays).toBe(90);
      const housekeeping = startHousekeeping(s.app.services, createLogger('silent'), s.config, 3600_000);
      housekeeping.stop();
      await housekeeping.first;
      const left = await s.db.prisma.loginEvent.findMany({ where: { accountId: u.id, createdAt: { lt: new Date(now - 30 * DAY) } } });
      expect(left.map((e) => e.sourceIp)).toEqual(['203.0.113.40']);
      // A shorter retention reaches the 40-day-old one too; the month shown is untouched.
      const shorter = startHousekeeping(s.app.services, createLogger('silent'), { loginEventRetentionDays: 35, auditRetentionDays: 400 }, 3600_000);
      shorter.stop();
      await shorter.first;
      expect(await s.db.prisma.loginEvent.count({ where: { accountId: u.id, createdAt: { lt: new Date(now - 30 * DAY) } } })).toBe(0);
      expect(textOf(await (await agent.get('/account/history')).text(), 'count')).toBe('1～20/41件');
    });

    test('no events in the last month: an empty state, not an empty table', async () => {
      const u = await newUser();
      const agent = new Agent(s.issuer);
      await signInToArea(s, agent, u);
      await s.db.prisma.loginEvent.deleteMany({ where: { accountId: u.id } });
      for (const path of ['/account/history', '/account/history?page=5']) {
        const res = await agent.get(path);
        expect(res.status).toBe(200);
        const html = await res.text();
        expect(textOf(html, 'empty')).toBe('直近1ヶ月のログイン履歴はありません。');
        expect(html).not.toContain('<table');
      }
    });
  });
});

describe('account area: changes need a recent sign-in', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer({ env: { ACCOUNT_REAUTH_AGE: '0' } });
  });
  afterAll(async () => {
    await s?.close();
  });

  test('a stale sign-in is sent to enter the one-time password again, and back to the page', async () => {
    const u = uniqueUser('sq-stale');
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    const agent = new Agent(s.issuer);
    const top = await signInToArea(s, agent, u);
    const html = await top.text();
    // Reading is fine.
    expect((await agent.get('/account/history')).status).toBe(200);

    for (const [res, back] of [
      [await agent.get('/account/secret-question'), '/account/secret-question'],
      [await agent.post('/account/secret-question', { _csrf: csrfOf(html), questionId: 'birthplace', answer: 'x' }), '/account/secret-question'],
      [await agent.get('/account/secret-question/confirm'), '/account/secret-question/confirm'],
      [await agent.post('/account/secret-question/confirm', { _csrf: csrfOf(html) }), '/account/secret-question/confirm'],
    ] as const) {
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe(`/account/reauth?return=${encodeURIComponent(back)}`);
    }
    // The re-authentication forces the login again (max_age=0).
    const reauth = await agent.get(`/account/reauth?return=${encodeURIComponent('/account/secret-question')}`);
    expect(new URL(reauth.headers.get('location')!, s.issuer).searchParams.get('max_age')).toBe('0');
    expect(await s.db.prisma.accountEvent.count({ where: { type: 'secret_question_changed' } })).toBe(0);
  });
});

describe('login history and secret question texts', () => {
  test('every login result has a label in both languages', () => {
    for (const locale of ['ja', 'en'] as const) {
      const t = translator(locale);
      for (const result of LOGIN_RESULTS) expect(t(`history:results.${result}`)).not.toBe(`results.${result}`);
    }
    expect(translator('ja')('history:results.success')).toBe('ログイン成功');
  });

  test('the Japanese and English files have the same keys', () => {
    const keys = (o: unknown, prefix = ''): string[] =>
      Object.entries(o as Record<string, unknown>).flatMap(([k, v]) => (v && typeof v === 'object' ? keys(v, `${prefix}${k}.`) : [`${prefix}${k}`]));
    for (const ns of ['secret', 'history']) {
      const read = (l: string) => JSON.parse(readFileSync(new URL(`../../src/i18n/locales/${l}/${ns}.json`, import.meta.url), 'utf8')) as unknown;
      expect(keys(read('en')).sort()).toEqual(keys(read('ja')).sort());
    }
  });

  test('times: Japan time as the manual prints it, UTC named in English', () => {
    const d = new Date('2013-04-22T06:44:58.500Z');
    expect(formatEventTime(d, 'ja')).toBe('2013/04/22 15:44:58');
    expect(formatEventTime(d, 'en')).toBe('2013-04-22 06:44:58 UTC');
    expect(formatEventTime(new Date('2013-12-31T15:00:00Z'), 'ja')).toBe('2014/01/01 00:00:00');
  });

  test('one month before: the same day of the previous month, clamped to its end', () => {
    expect(oneMonthBefore(new Date('2025-05-15T03:04:05Z')).toISOString()).toBe('2025-04-15T03:04:05.000Z');
    expect(oneMonthBefore(new Date('2024-03-31T12:00:00Z')).toISOString()).toBe('2024-02-29T12:00:00.000Z');
    expect(oneMonthBefore(new Date('2025-01-10T00:00:00Z')).toISOString()).toBe('2024-12-10T00:00:00.000Z');
  });
});
