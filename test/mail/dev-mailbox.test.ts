import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import Koa from 'koa';
import views from 'koa-views';
import { errorHandler } from '../../src/http/error-handler.js';
import { locale } from '../../src/http/locale.js';
import { VIEWS_DIR } from '../../src/http/pages.js';
import { devMailboxRouter } from '../../src/mail/dev-mailbox.router.js';
import { createMailQueue } from '../../src/mail/mail.queue.js';
import { createMailSender } from '../../src/mail/mail.sender.js';
import { createMailTransport } from '../../src/mail/mail.transport.js';
import { MEMORY_DATA_DIR, openDatabase, type Database } from '../../src/persistence/database.js';
import { DevMailRepository } from '../../src/persistence/dev-mail.repository.js';
import { mailStore, SEAL_KEYS } from './mail-store.js';
import { captureLogger, startSmtpSink } from './smtp-sink.js';

const OTP = '91827364';

interface JsonMailbox {
  messages: Array<{ id: string; to: string; subject: string; text: string; html: string | null; createdAt: string }>;
}

describe('dev mailbox (in-memory PGlite)', () => {
  let db: Database;
  let repo: DevMailRepository;
  let server: Server;
  let base: string;

  beforeAll(async () => {
    db = await openDatabase({ dataDir: MEMORY_DATA_DIR });
    repo = new DevMailRepository(db.prisma);
    const koa = new Koa();
    koa.use(views(VIEWS_DIR, { extension: 'pug', options: { basedir: VIEWS_DIR } }));
    koa.use(locale());
    koa.use(errorHandler(captureLogger().logger));
    const router = devMailboxRouter({ repo });
    koa.use(router.routes()).use(router.allowedMethods());
    server = koa.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((r) => server.close(r));
    await db.close();
  });

  beforeEach(() => db.prisma.devMail.deleteMany());

  test('the repository records one row per recipient, lists newest first, gets by id and prunes', async () => {
    const first = await repo.record({ to: ['a@example.jp', 'b@example.jp'], subject: 'first', text: 'one', html: '<p>one</p>' });
    expect(first.map((m) => m.to)).toEqual(['a@example.jp', 'b@example.jp']);
    // Older for certain, without waiting for the clock to move on.
    await db.prisma.devMail.updateMany({ where: { subject: 'first' }, data: { createdAt: new Date(Date.now() - 10_000) } });
    await repo.record({ to: ['a@example.jp'], subject: 'second', text: 'two', html: null });

    expect((await repo.listLatest(10)).map((m) => m.subject)).toEqual(['second', 'first', 'first']);
    expect((await repo.listLatest(1)).map((m) => m.subject)).toEqual(['second']);
    expect((await repo.listLatest(10, { to: 'A@Example.JP' })).map((m) => m.subject)).toEqual(['second', 'first']);
    expect(await repo.listLatest(10, { to: 'example.jp' })).toEqual([]);

    const one = first[0];
    expect(await repo.get(one?.id ?? '')).toMatchObject({ subject: 'first', text: 'one', html: '<p>one</p>' });
    expect(await repo.get('00000000-0000-4000-8000-000000000000')).toBeNull();
    expect(await repo.get('not-a-uuid')).toBeNull();

    expect(await repo.deleteOlderThan(new Date(Date.now() - 60_000))).toBe(0);
    expect(await repo.deleteOlderThan(new Date(Date.now() + 1000))).toBe(3);
    expect(await repo.listLatest(10)).toEqual([]);
  });

  test('without SMTP_URL queued mail lands in the dev mailbox, and the JSON gives tests the OTP', async () => {
    const log = captureLogger();
    const sender = createMailSender({
      config: { mailFrom: 'no-reply@example.test', devMailbox: true },
      transport: createMailTransport({ smtpUrl: undefined }),
      logger: log.logger,
      devMail: repo,
    });
    const queue = createMailQueue({ config: { redisUrl: undefined, mailWorker: 'inline' }, sender, logger: log.logger, store: mailStore(db), sealKeys: SEAL_KEYS });
    await queue.enqueue({
      to: ['jiro@example.jp', 'jiro.phone@example.jp'],
      template: 'login-otp',
      locale: 'ja',
      params: { userId: 'p-01-usr003', otp: OTP, expiresMinutes: '10', clientName: 'デモサイト' },
    });
    await queue.close();

    const res = await fetch(`${base}/dev/mailbox.json?to=${encodeURIComponent('jiro.phone@example.jp')}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as JsonMailbox;
    expect(body.messages).toHaveLength(1);
    expect(body.messages[0]?.subject).toBe('【あんしんログインサービス】ワンタイムパスワードのお知らせ');
    expect(/ワンタイムパスワード：(\d+)/.exec(body.messages[0]?.text ?? '')?.[1]).toBe(OTP);
    expect(log.output()).toContain('mail recorded in the dev mailbox');
    expect(log.output()).not.toContain(OTP);
  });

  test('with SMTP the mail is delivered and its text is not stored in the dev mailbox', async () => {
    const sink = await startSmtpSink();
    try {
      const log = captureLogger();
      const sender = createMailSender({
        config: { mailFrom: 'no-reply@example.test', devMailbox: true },
        transport: createMailTransport({ smtpUrl: sink.url }),
        logger: log.logger,
        devMail: repo,
      });
      await sender.send({ to: ['saburo@example.jp'], template: 'account-locked', locale: 'en', params: { userId: 'u-3', clientName: 'Demo' } });
      await sender.send({ to: ['saburo@example.jp'], template: 'login-otp', locale: 'ja', params: { userId: 'u-3', otp: OTP, expiresMinutes: '10', clientName: 'Demo' } });
      expect(sink.received).toHaveLength(2);
      expect(sink.received[1]?.text).toContain(OTP);
      expect(await db.prisma.devMail.count()).toBe(0);
      expect(log.output()).toContain('"msg":"mail sent"');
    } finally {
      await sink.close();
    }
  });

  test('the pages list messages, show one with its HTML sandboxed, and say they are a development tool', async () => {
    const [saved] = await repo.record({
      to: ['shiro@example.jp'],
      subject: 'Hello <b>there</b>',
      text: 'Plain body',
      html: '<p onclick="x()">Hi "you"</p><script>alert(1)</script>',
    });

    const list = await fetch(`${base}/dev/mailbox?lang=ja`);
    expect(list.status).toBe(200);
    const listHtml = await list.text();
    expect(listHtml).toContain('開発用メールボックス');
    expect(listHtml).toContain('開発・テスト用のツール');
    expect(listHtml).toContain('shiro@example.jp');
    expect(listHtml).toContain('Hello &lt;b&gt;there&lt;/b&gt;');
    expect(listHtml).toContain(`href="/dev/mailbox/${saved?.id}"`);

    const en = await (await fetch(`${base}/dev/mailbox?lang=en`)).text();
    expect(en).toContain('Development mailbox');
    expect(en).toContain('development and testing tool');

    const page = await fetch(`${base}/dev/mailbox/${saved?.id}?lang=en`);
    expect(page.status).toBe(200);
    const pageHtml = await page.text();
    expect(pageHtml).toContain('<pre>Plain body</pre>');
    expect(pageHtml).toMatch(/<iframe[^>]* sandbox=""[^>]* srcdoc="&lt;p onclick=&quot;x\(\)&quot;&gt;Hi &quot;you&quot;&lt;\/p&gt;&lt;script&gt;/);
    expect(pageHtml).not.toContain('<script>alert(1)</script>');

    expect((await fetch(`${base}/dev/mailbox/00000000-0000-4000-8000-000000000000`)).status).toBe(404);
    expect((await fetch(`${base}/dev/mailbox/whatever`)).status).toBe(404);
  });
});
