// The translate functions pages and mails use: plain lookups are remembered per locale, and what
// carries options (interpolation) is translated afresh each time.
import { translator } from '../../src/i18n/index.js';

describe('translator', () => {
  test('one function per locale, giving each locale its own text', () => {
    expect(translator('ja')).toBe(translator('ja'));
    expect(translator('ja')('common:service_name')).toBe('あんしんログインサービス');
    expect(translator('en')('common:service_name')).toBe('Anshin Login Service');
    // Asked again: the same text (from memory now).
    expect(translator('ja')('common:service_name')).toBe('あんしんログインサービス');
  });

  test('interpolation is not remembered: each call gets its own values', () => {
    const t = translator('ja');
    expect(t('common:errors.field_too_long', { field: 'ユーザID', max: 64 })).toBe('ユーザIDは64文字以内で入力してください。');
    expect(t('common:errors.field_too_long', { field: '名前', max: 20 })).toBe('名前は20文字以内で入力してください。');
    expect(translator('en')('common:errors.field_required', { field: 'User ID' })).toMatch(/User ID/);
  });

  test('a key that does not exist comes back as itself, every time', () => {
    const t = translator('en');
    expect(t('common:no_such_key_here')).toBe('no_such_key_here');
    expect(t('common:no_such_key_here')).toBe('no_such_key_here');
  });
});
