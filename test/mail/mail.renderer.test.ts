import { readdirSync } from 'node:fs';
import { LOCALES } from '../../src/i18n/index.js';
import { DEFAULT_TEMPLATES_DIR, renderMail } from '../../src/mail/mail.renderer.js';
import { MAIL_TEMPLATES, PermanentMailError, type MailTemplate } from '../../src/mail/mail.types.js';

const SAMPLE_PARAMS: Record<MailTemplate, Record<string, string>> = {
  'login-otp': { userId: 'p-01-usr012', otp: '48213907', expiresMinutes: '10', clientName: 'デモサイト' },
  'account-locked': { userId: 'p-01-usr012', clientName: 'デモサイト' },
  'account-locked-temporary': { userId: 'p-01-usr012', clientName: 'デモサイト', unlockAt: '2025/04/01 09:45:00' },
  'new-ip-login': { userId: 'p-01-usr012', ip: '203.0.113.7', time: '2025-04-01 09:30', clientName: 'デモサイト' },
  activation: { userId: 'p-01-usr007', url: 'https://idp.example/activation/t1?user=p-01-usr007', otp: '90817263', expiresAt: '2025-04-08 09:30 UTC', siteName: 'デモ株式会社' },
  'activation-completed': { userId: 'p-01-usr007', siteName: 'デモ株式会社' },
  'account-unlocked': { userId: 'p-01-usr007' },
  'recovery-used': { userId: 'p-01-usr007', action: 'パスワード再設定', time: '2025-04-01 09:30', ip: '203.0.113.7' },
  'device-verify': { userId: 'p-01-usr012', otp: '57302918', expiresMinutes: '10', number: '2' },
  'devices-changed': { userId: 'p-01-usr012', action: '端末の追加', device: '端末No 2（パソコン）new@example.jp', time: '2025-04-01 09:30:00 UTC', ip: '203.0.113.7' },
  'secret-question-changed': { userId: 'p-01-usr012', time: '2025/04/01 09:30:00', ip: '203.0.113.7' },
  'login-method-changed': { userId: 'p-01-usr012', from: 'ワンタイムパスワード', to: 'パスワード＋ワンタイムパスワード' },
  'activation-reissued': { userId: 'p-01-usr012' },
  'signed-out-everywhere': { userId: 'p-01-usr012', ip: '203.0.113.7' },
  'passkey-registered': { userId: 'p-01-usr012', name: '会社のパソコン', time: '2025/04/01 09:30:00', ip: '203.0.113.7' },
  'passkey-deleted': { userId: 'p-01-usr012', name: '会社のパソコン', time: '2025/04/01 09:30:00', ip: '203.0.113.7' },
};

describe('mail templates', () => {
  test('every template has a Japanese and an English file, and nothing else is lying around', () => {
    const files = readdirSync(DEFAULT_TEMPLATES_DIR).filter((f) => f.endsWith('.txt') && !f.startsWith('_'));
    const expected = MAIL_TEMPLATES.flatMap((t) => LOCALES.map((l) => `${t}.${l}.txt`));
    expect(files.sort()).toEqual(expected.sort());
  });

  test.each(MAIL_TEMPLATES.flatMap((t) => LOCALES.map((l) => [t, l] as const)))('%s (%s) renders subject, text and HTML', (template, locale) => {
    const params = SAMPLE_PARAMS[template];
    const mail = renderMail({ template, locale, params });
    expect(mail.subject).toContain(locale === 'ja' ? '【あんしんログインサービス】' : '[Anshin Login Service]');
    expect(mail.subject).not.toMatch(/[\r\n{}]/);
    for (const value of Object.values(params)) {
      expect(mail.text).toContain(value);
      expect(mail.html).toContain(value);
    }
    expect(mail.text).not.toContain('{{');
    expect(mail.html).not.toContain('{{');
    expect(mail.html).toMatch(new RegExp(`^<!DOCTYPE html><html lang="${locale}">`));
    expect(mail.text).toContain(locale === 'ja' ? '送信専用' : 'cannot receive replies');
  });

  test('the OTP mail says when the code expires and shows the code prominently', () => {
    const ja = renderMail({ template: 'login-otp', locale: 'ja', params: SAMPLE_PARAMS['login-otp'] });
    expect(ja.subject).toBe('【あんしんログインサービス】ワンタイムパスワードのお知らせ');
    expect(ja.text).toContain('p-01-usr012 様');
    expect(ja.text).toContain('ワンタイムパスワード：48213907');
    expect(ja.text).toContain('有効期限は、本メール送信から10分間です');
    expect(ja.html).toMatch(/<strong[^>]*>48213907<\/strong>/);
    const en = renderMail({ template: 'login-otp', locale: 'en', params: SAMPLE_PARAMS['login-otp'] });
    expect(en.subject).toBe('[Anshin Login Service] Your one-time password');
    expect(en.text).toContain('It expires 10 minutes after this message was sent');
  });

  test('params are escaped in the HTML part and cannot add a header line to the subject', () => {
    const mail = renderMail({
      template: 'account-locked',
      locale: 'en',
      params: { userId: '<script>alert(1)</script>', clientName: 'Evil\r\nBcc: x@example.com' },
    });
    expect(mail.html).not.toContain('<script>');
    expect(mail.html).toContain('&lt;script&gt;');
    expect(mail.subject).not.toMatch(/[\r\n]/);
  });

  test('a missing param is a permanent error naming the param, not the values', () => {
    const render = () => renderMail({ template: 'login-otp', locale: 'ja', params: { userId: 'u', otp: '12345678' } });
    expect(render).toThrow(PermanentMailError);
    expect(render).toThrow(/expiresMinutes, clientName|clientName, expiresMinutes/);
    expect(render).not.toThrow(/12345678/);
  });
});
