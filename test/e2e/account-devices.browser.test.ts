import type { Page } from 'playwright-core';
import { startTestServer, uniqueUser, type TestServer } from '../support/harness.js';
import { describeBrowser, screenshot, useBrowserSuite } from '../support/browser.js';

/** What each page must say, per language (literal, so a broken translation fails the test). */
const TEXTS = {
  ja: {
    browserLocale: 'ja-JP',
    send: '送信',
    otpSubmit: 'ログイン',
    topTitle: 'アカウント管理',
    add: '追加',
    change: '変更',
    delete: '削除',
    steps: ['端末登録', '端末登録確認', 'メールアドレス確認', '端末登録完了'],
    addTitle: '端末登録',
    addLead: 'お客様の利用される端末の情報を登録します。利用される端末で受信できるメールアドレスを入力してください。また登録する端末の種別を選択してください。',
    email: 'メールアドレス',
    emailConfirm: 'メールアドレス確認',
    kind: '端末種別',
    pc: 'パソコン',
    mobile: '携帯電話',
    smartphone: 'スマートフォン',
    confirmButton: '確認',
    mismatch: 'メールアドレスとメールアドレス確認が一致しません。',
    confirmTitle: '端末登録確認',
    confirmLead: '入力された情報に誤りがないか確認してください。',
    register: '登録',
    back: '戻る',
    verifyTitle: 'メールアドレス確認',
    code: '確認コード',
    verifyButton: '確認',
    wrongCode: '確認コードが一致しません。あと4回入力できます。',
    doneTitle: '端末登録完了',
    done: '端末の登録が完了しました。',
    toTop: 'アカウント管理に戻る',
    editTitle: '端末情報変更',
    changeConfirmTitle: '端末情報変更確認',
    changeDoneTitle: '端末情報変更完了',
    deleteTitle: '端末削除確認',
    deletedTitle: '端末削除完了',
    lastDevice: '最後の端末は削除できません。',
  },
  en: {
    browserLocale: 'en-US',
    send: 'Send',
    otpSubmit: 'Log in',
    topTitle: 'Account',
    add: 'Add',
    change: 'Change',
    delete: 'Delete',
    steps: ['Add a device', 'Confirm', 'Confirm the address', 'Done'],
    addTitle: 'Add a device',
    addLead: 'Register a device you use. Enter an e-mail address you can receive on that device, and choose the type of the device.',
    email: 'E-mail address',
    emailConfirm: 'E-mail address (again)',
    kind: 'Device type',
    pc: 'PC',
    mobile: 'Mobile phone',
    smartphone: 'Smartphone',
    confirmButton: 'Confirm',
    mismatch: 'The two e-mail addresses do not match.',
    confirmTitle: 'Confirm the new device',
    confirmLead: 'Please check that the details are correct.',
    register: 'Register',
    back: 'Back',
    verifyTitle: 'Confirm the e-mail address',
    code: 'Confirmation code',
    verifyButton: 'Confirm',
    wrongCode: 'The confirmation code does not match. You can try 4 more time(s).',
    doneTitle: 'Device added',
    done: 'The device has been added.',
    toTop: 'Back to your account',
    editTitle: 'Change a device',
    changeConfirmTitle: 'Confirm the change',
    changeDoneTitle: 'Device changed',
    deleteTitle: 'Delete a device',
    deletedTitle: 'Device deleted',
    lastDevice: 'The last device cannot be deleted.',
  },
} as const;
type Lang = keyof typeof TEXTS;

describeBrowser('account area devices in Chromium', () => {
  let s: TestServer;
  const suite = useBrowserSuite(startTestServer, (server) => {
    s = server;
  });

  function openPage(locale: string, javaScriptEnabled: boolean): Promise<Page> {
    return suite.openPage(locale, { javaScriptEnabled });
  }

  async function expectPage(page: Page, lang: Lang, ...texts: string[]) {
    expect(await page.locator('html').getAttribute('lang')).toBe(lang);
    const visible = await page.locator('body').innerText();
    for (const text of texts) expect(visible).toContain(text);
  }

  /** The step indicator names all four steps and marks exactly the current one. */
  async function expectStep(page: Page, lang: Lang, current: number) {
    const items = page.locator('ol.steps li');
    expect(await items.count()).toBe(4);
    for (let i = 0; i < 4; i++) {
      expect(await items.nth(i).innerText()).toContain(TEXTS[lang].steps[i]);
      expect(await items.nth(i).getAttribute('aria-current')).toBe(i === current ? 'step' : null);
    }
  }

  // Japanese with JavaScript, English without: the pages need none.
  test.each([
    ['ja', true],
    ['en', false],
  ] as const)('%s (JavaScript %s): 追加 → 確認 → code → 完了, 変更, 削除', async (lang, js) => {
    const t = TEXTS[lang];
    const u = uniqueUser(`e2edev${lang}`);
    await s.app.services.accounts.create({ tenantId: 't1', userId: u.userId, devices: [{ email: u.email }] });
    const page = await openPage(t.browserLocale, js);
    const shot = (n: string) => screenshot(page, `area-devices-${lang}-${n}`);
    const field = (label: string) => page.getByLabel(label, { exact: true });
    const button = (name: string) => page.getByRole('button', { name, exact: true });

    // Into the area from the site's link, signing in with the code mailed to the device.
    await page.goto(`${s.issuer}/account/?client_id=rp-basic`);
    await page.locator('#userId').fill(u.userId);
    let since = s.smtp.messages.length;
    await button(t.send).click();
    await page.locator('#otp').fill(await s.smtp.otpFor(u.email, since));
    await page.locator('form[action$="/otp"]').getByRole('button', { name: t.otpSubmit, exact: true }).click();
    await page.waitForURL(/\/account\/\?client_id=rp-basic$/);
    await expectPage(page, lang, t.topTitle, u.email);
    await shot('01-top');

    // 追加 → 端末登録: a mismatch first, shown at its field.
    await page.getByRole('link', { name: t.add, exact: true }).click();
    await page.waitForURL(/\/account\/devices\/new$/);
    await expectPage(page, lang, t.addTitle, t.addLead, t.kind);
    await expectStep(page, lang, 0);
    expect(await page.getByRole('radio', { name: t.pc, exact: true }).isChecked()).toBe(true);
    const newAddress = `new-${u.email}`;
    await field(t.email).fill(newAddress);
    await field(t.emailConfirm).fill(`typo-${u.email}`);
    await page.getByRole('radio', { name: t.smartphone, exact: true }).check();
    await shot('02-add-form');
    await button(t.confirmButton).click();
    await page.getByText(t.mismatch).waitFor();
    expect(await field(t.emailConfirm).getAttribute('aria-invalid')).toBe('true');
    expect(await field(t.emailConfirm).getAttribute('aria-describedby')).toBe('emailConfirm-error');
    expect(await page.getByRole('radio', { name: t.smartphone, exact: true }).isChecked()).toBe(true);
    if (js) expect(await page.evaluate(() => document.activeElement?.id)).toBe('emailConfirm');
    await shot('03-add-form-error');
    await field(t.emailConfirm).fill(newAddress);
    await button(t.confirmButton).click();

    // 端末登録確認: 戻る keeps the input; 登録 sends the code.
    await page.getByRole('heading', { name: t.confirmTitle, exact: true }).waitFor();
    await expectPage(page, lang, t.confirmLead, newAddress, t.smartphone);
    await expectStep(page, lang, 1);
    await shot('04-add-confirm');
    await button(t.back).click();
    await page.getByRole('heading', { name: t.addTitle, exact: true }).waitFor();
    expect(await field(t.email).inputValue()).toBe(newAddress);
    await button(t.confirmButton).click();
    await page.getByRole('heading', { name: t.confirmTitle, exact: true }).waitFor();
    since = s.smtp.messages.length;
    await button(t.register).click();

    // メールアドレス確認: a wrong code, then the one mailed to the new address.
    await page.waitForURL(/\/account\/devices\/2\/verify$/);
    await expectPage(page, lang, t.verifyTitle, newAddress);
    await expectStep(page, lang, 2);
    const code = await s.smtp.otpFor(newAddress, since);
    await shot('05-verify');
    await field(t.code).fill(code === '00000000' ? '11111111' : '00000000');
    await button(t.verifyButton).click();
    await page.getByRole('alert').getByText(t.wrongCode).waitFor();
    expect(await field(t.code).getAttribute('aria-invalid')).toBe('true');
    await shot('06-verify-wrong');
    await field(t.code).fill(code);
    await button(t.verifyButton).click();

    // 端末登録完了, and the device is in the table.
    await page.waitForURL(/\/account\/devices\/2\/done\?op=added$/);
    await expectPage(page, lang, t.doneTitle, t.done, newAddress);
    await expectStep(page, lang, 3);
    await shot('07-add-done');
    await page.getByRole('link', { name: t.toTop, exact: true }).click();
    await page.waitForURL(`${s.issuer}/account/`);
    expect(await page.locator('#devices tbody tr').count()).toBe(2);
    expect(await page.locator('#devices tbody tr').nth(1).innerText()).toContain(newAddress);

    // 変更: device 2 gets another address and kind; the address is proven the same way.
    const edit = page.locator('a[href="/account/devices/2/edit"]');
    expect((await edit.innerText()).trim()).toBe(t.change);
    await edit.click();
    await page.getByRole('heading', { name: t.editTitle, exact: true }).waitFor();
    expect(await field(t.email).inputValue()).toBe(newAddress);
    const changed = `changed-${u.email}`;
    await field(t.email).fill(changed);
    await field(t.emailConfirm).fill(changed);
    await page.getByRole('radio', { name: t.mobile, exact: true }).check();
    await shot('08-change-form');
    await button(t.confirmButton).click();
    await page.getByRole('heading', { name: t.changeConfirmTitle, exact: true }).waitFor();
    await expectPage(page, lang, changed, t.mobile, newAddress);
    await shot('09-change-confirm');
    since = s.smtp.messages.length;
    await button(t.register).click();
    await page.waitForURL(/\/account\/devices\/2\/verify$/);
    await expectPage(page, lang, changed);
    await field(t.code).fill(await s.smtp.otpFor(changed, since));
    await button(t.verifyButton).click();
    await page.waitForURL(/\/account\/devices\/2\/done\?op=changed$/);
    await expectPage(page, lang, t.changeDoneTitle, changed, t.mobile);
    await shot('10-change-done');

    // 削除: the confirmation, then the table has one device again.
    await page.goto(`${s.issuer}/account/`);
    const del = page.locator('a[href="/account/devices/2/delete"]');
    expect((await del.innerText()).trim()).toBe(t.delete);
    await del.click();
    await page.getByRole('heading', { name: t.deleteTitle, exact: true }).waitFor();
    await expectPage(page, lang, changed);
    await shot('11-delete-confirm');
    await button(t.delete).click();
    await page.getByRole('heading', { name: t.deletedTitle, exact: true }).waitFor();
    await shot('12-deleted');
    await page.getByRole('link', { name: t.toTop, exact: true }).click();
    expect(await page.locator('#devices tbody tr').count()).toBe(1);

    // The last device stays, and the page says why.
    await page.locator('a[href="/account/devices/1/delete"]').click();
    await page.getByRole('alert').getByText(t.lastDevice).waitFor();
    expect(await page.getByRole('button', { name: t.delete, exact: true }).count()).toBe(0);
    await shot('13-delete-last');

    const account = await s.app.services.accounts.findByUserId('t1', u.userId);
    expect(account!.devices.map((d) => d.email)).toEqual([u.email]);
  });
});
