import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Page } from 'playwright-core';
import { parseTenants } from '../../src/config/tenants.js';
import { startTestServer, uniqueUser, TEST_TENANTS_YAML, type TestServer } from '../support/harness.js';
import { Agent } from '../support/browser-less.js';
import { signInToArea } from '../support/account-area.js';
import { describeBrowser, screenshot, useBrowserSuite } from '../support/browser.js';
import { consoleTenantsYaml, newStaff, STAFF_PASSWORD } from '../support/console.js';
import { waitUntil } from '../mail/mail-store.js';

/** What the console's pages must say, per language (literal, so a broken translation fails the test). */
const TEXTS = {
  ja: {
    browserLocale: 'ja-JP',
    send: '送信',
    passwordSubmit: 'ログイン',
    otpSubmit: 'ログイン',
    searchTitle: 'アカウント検索',
    detailTitle: 'アカウント詳細',
    locked: 'ロック中',
    active: '有効',
    unlockTitle: 'ロック解除',
    unlocked: 'ロックを解除しました。',
    endTitle: 'すべてのセッションを終了',
    ended: 'ログイン中のセッションをすべて終了しました。',
    activationTitle: '初回認証の再発行',
    issued: '初回認証を発行しました',
    auditMenu: '操作記録',
    auditUnlock: 'ロック解除',
    webhooksMenu: 'Webhook',
    registered: '受信先を登録しました',
    testQueued: 'テスト送信を受け付けました。',
    delivered: '送信済み',
  },
  en: {
    browserLocale: 'en-US',
    send: 'Send',
    passwordSubmit: 'Log in',
    otpSubmit: 'Log in',
    searchTitle: 'Account search',
    detailTitle: 'Account details',
    locked: 'Locked',
    active: 'Active',
    unlockTitle: 'Unlock',
    unlocked: 'The account is unlocked.',
    endTitle: 'End all sessions',
    ended: 'All sessions have ended.',
    activationTitle: 'Issue a new activation',
    issued: 'Activation issued',
    auditMenu: 'Audit trail',
    auditUnlock: 'Unlocked',
    webhooksMenu: 'Webhooks',
    registered: 'Receiver registered',
    testQueued: 'The test delivery is queued.',
    delivered: 'Delivered',
  },
} as const;
type Lang = keyof typeof TEXTS;

describeBrowser('the support console in Chromium', () => {
  let s: TestServer;
  let receiver: Server;
  let receiverUrl: string;
  const received: string[] = [];
  const { openPage } = useBrowserSuite(
    () => startTestServer({ tenants: parseTenants('t', consoleTenantsYaml(TEST_TENANTS_YAML)), env: { WEBHOOK_ALLOW_PRIVATE_TARGETS: 'true' } }),
    async (server) => {
      s = server;
      receiver = createServer((req, res) => {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => {
          received.push(body);
          res.writeHead(204).end();
        });
      });
      await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
      receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    },
  );
  afterAll(async () => {
    receiver?.closeAllConnections();
    await new Promise<void>((r) => (receiver ? receiver.close(() => r()) : r()));
  });

  async function expectPage(page: Page, lang: Lang, ...texts: Array<string | RegExp>) {
    expect(await page.locator('html').getAttribute('lang')).toBe(lang);
    const visible = await page.locator('body').innerText();
    for (const text of texts) typeof text === 'string' ? expect(visible).toContain(text) : expect(visible).toMatch(text);
  }

  describe.each(['ja', 'en'] as const)('%s', (lang) => {
    const t = TEXTS[lang];

    test('staff sign in with password and mailed code, search, open an account, unlock, end its sessions, issue an activation, read the audit trail, send a webhook test delivery', async () => {
      const staff = await newStaff(s, 't1', 'admin');
      const u = uniqueUser(`cb${lang}`);
      const created = await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
      // The user is signed in somewhere (the account area), then locked.
      expect((await signInToArea(s, new Agent(s.issuer), u)).status).toBe(200);
      await s.db.prisma.account.update({ where: { id: created.id }, data: { lockedAt: new Date(), failedAttempts: 5 } });

      const page = await openPage(t.browserLocale);
      await page.goto(`${s.issuer}/console/login?tenant=t1`);
      await page.locator('#userId').fill(staff.userId);
      await page.locator('form[action$="/identify"]').getByRole('button', { name: t.send, exact: true }).click();
      await page.locator('#password').fill(STAFF_PASSWORD);
      const before = s.smtp.messages.length;
      await page.locator('form[action$="/password"]').getByRole('button', { name: t.passwordSubmit, exact: true }).click();
      await page.locator('#otp').fill(await s.smtp.otpFor(staff.email, before));
      await page.locator('form[action$="/otp"]').getByRole('button', { name: t.otpSubmit, exact: true }).click();
      await page.waitForURL(`${s.issuer}/console/`);
      await expectPage(page, lang, t.searchTitle, staff.userId);

      // Search by the user ID's start, then open the account.
      await page.locator('#user_id').fill(u.userId.slice(0, -3));
      await page.locator('#search').getByRole('button').click();
      await page.locator(`tr[data-user-id="${u.userId}"] a`).click();
      await expectPage(page, lang, t.detailTitle, u.userId, u.email, t.locked);
      expect(await page.locator('#sessions tbody tr').count()).toBe(1);
      await screenshot(page, `console-${lang}-account-locked`);

      await page.locator('#action-unlock').click();
      await expectPage(page, lang, t.unlockTitle, u.userId);
      await screenshot(page, `console-${lang}-confirm-unlock`);
      await page.locator('#confirm').click();
      await expectPage(page, lang, t.unlocked);
      expect(await page.locator('#status').innerText()).toBe(t.active);

      await page.locator('#action-end-sessions').click();
      await expectPage(page, lang, t.endTitle);
      await page.locator('#confirm').click();
      await expectPage(page, lang, t.ended);
      expect(await page.locator('#sessions').count()).toBe(0);

      await page.locator('#action-activation').click();
      await expectPage(page, lang, t.activationTitle);
      await page.locator('#confirm').click();
      await expectPage(page, lang, t.issued);
      expect(await page.locator('#activation-code').innerText()).toMatch(/^\d{6,12}$/);
      await screenshot(page, `console-${lang}-activation-issued`);

      await page.getByRole('link', { name: t.auditMenu, exact: true }).click();
      await page.waitForURL(`${s.issuer}/console/audit`);
      await page.locator('#a-user').fill(u.userId);
      await page.locator('#audit-filter').getByRole('button').click();
      expect(await page.locator('#audit tbody tr').count()).toBe(3);
      await expectPage(page, lang, t.auditUnlock, staff.userId);
      await screenshot(page, `console-${lang}-audit`);

      await page.getByRole('link', { name: t.webhooksMenu, exact: true }).click();
      await page.locator('#w-url').fill(`${receiverUrl}?${lang}`);
      await page.locator('#register-button').click();
      await expectPage(page, lang, t.registered);
      expect(await page.locator('#hook-secret').innerText()).toMatch(/^whsec_/);
      await page.locator('#to-hook').click();
      const sentBefore = received.length;
      await page.locator('#test-delivery').click();
      await expectPage(page, lang, t.testQueued);
      // The receiver gets it; the delivery log then says so.
      await waitUntil(() => received.length > sentBefore, 'the test delivery at the receiver');
      expect(JSON.parse(received.at(-1)!)).toMatchObject({ type: 'webhook.test' });
      await waitUntil(async () => {
        await page.reload();
        return (await page.locator('#deliveries tr[data-status="delivered"]').count()) > 0;
      }, 'the delivery log saying delivered');
      await expectPage(page, lang, t.delivered, 'webhook.test');
      await screenshot(page, `console-${lang}-webhook-delivered`);
    });
  });
});
