// The translate functions pages and mails use: plain lookups, and lookups with string or number values
// to insert, are remembered per locale; other options (counts, contexts) are translated afresh each time.
import { translator } from '../../src/i18n/index.js';

describe('translator', () => {
  test('one function per locale, giving each locale its own text', () => {
    expect(translator('ja')).toBe(translator('ja'));
    expect(translator('ja')('common:service_name')).toBe('あんしんログインサービス');
    expect(translator('en')('common:service_name')).toBe('Anshin Login Service');
    // Asked again: the same text (from memory now).
    expect(translator('ja')('common:service_name')).toBe('あんしんログインサービス');
  });

  test('texts with numbers to insert are remembered per set of values: each call gets its own values', () => {
    const t = translator('ja');
    expect(t('common:errors.field_too_long', { field: 'ユーザID', max: 64 })).toBe('ユーザIDは64文字以内で入力してください。');
    expect(t('common:errors.field_too_long', { field: '名前', max: 20 })).toBe('名前は20文字以内で入力してください。');
    expect(t('common:errors.field_too_long', { field: 'ユーザID', max: 64 })).toBe('ユーザIDは64文字以内で入力してください。');
    expect(t('common:errors.field_too_long', { field: 'ユーザID', max: 65 })).toBe('ユーザIDは65文字以内で入力してください。');
    // The same digits as a string are their own set (remembered apart), with the same text here.
    expect(t('common:errors.field_too_long', { field: 'ユーザID', max: '64' })).toBe('ユーザIDは64文字以内で入力してください。');
    expect(t('login:otp.sent_hint', { minutes: 10 })).toContain('10');
    expect(t('login:otp.sent_hint', { minutes: 5 })).toContain('5');
    expect(t('login:otp.sent_hint', { minutes: 5 })).not.toBe(t('login:otp.sent_hint', { minutes: 10 }));
    expect(translator('en')('common:errors.field_required', { field: 'User ID' })).toMatch(/User ID/);
  });

  test('values that are neither strings nor finite numbers go to i18next every time', () => {
    const t = translator('en');
    expect(t('common:errors.field_too_long', { field: 'Name', max: Number.NaN })).toContain('NaN');
    expect(t('common:errors.field_too_long', { field: 'Name', max: 3 })).toContain('3');
    expect(t('common:errors.field_too_long', { field: { toString: () => 'Object name' }, max: 3 })).toContain('Object name');
  });

  test('texts with string values are remembered per set of values, and each set gets its own text', () => {
    const t = translator('en');
    const a = t('login:for_site', { site: 'Demo Site' });
    expect(a).toContain('Demo Site');
    expect(t('login:for_site', { site: 'Other <Site>' })).toContain('Other');
    expect(t('login:for_site', { site: 'Demo Site' })).toBe(a);
    // Values that spell the same characters split differently are different sets.
    expect(t('common:errors.field_required', { field: 'User', x: 'ID' })).not.toBe(t('common:errors.field_required', { field: 'User\u0001x', x: '' }));
    expect(translator('ja')('login:for_site', { site: 'Demo Site' })).not.toBe(a);
  });

  test('plural counts and other i18next options still choose the text on every call', () => {
    const t = translator('en');
    expect(t('activation:errors.locked_temporary', { count: 1 })).toMatch(/about 1 minute\./);
    expect(t('activation:errors.locked_temporary', { count: 5 })).toMatch(/about 5 minutes\./);
    expect(t('activation:errors.locked_temporary', { count: 1 })).toMatch(/about 1 minute\./);
    expect(t('common:service_name', { lng: 'ja' })).toBe('あんしんログインサービス');
    expect(t('common:service_name')).toBe('Anshin Login Service');
  });

  test('a key that does not exist comes back as itself, every time', () => {
    const t = translator('en');
    expect(t('common:no_such_key_here')).toBe('no_such_key_here');
    expect(t('common:no_such_key_here')).toBe('no_such_key_here');
  });
});
