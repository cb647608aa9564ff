import { loadConfig, ConfigError } from '../../src/config/index.js';
import { parseTenants } from '../../src/config/tenants.js';

describe('configuration', () => {
  test('a bad tenants file names the key that is wrong', () => {
    const bad = `tenants:\n  - id: Bad_Id\n    name: x\n    clients:\n      - { client_id: c, name: c, redirect_uris: ['not a url'] }\n`;
    let error: unknown;
    try {
      parseTenants('tenants.yaml', bad);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    expect(message).toContain('tenants.0.id');
    expect(message).toContain('tenants.0.clients.0.redirect_uris.0');
  });

  test('duplicate client ids, unknown keys and broken YAML are refused', () => {
    const dup = `tenants:\n  - id: a\n    name: a\n    clients: [{ client_id: c, name: c, redirect_uris: ['https://a.example/cb'] }]\n  - id: b\n    name: b\n    clients: [{ client_id: c, name: c, redirect_uris: ['https://b.example/cb'] }]\n`;
    expect(() => parseTenants('f', dup)).toThrow(/tenants\.1\.clients\.0\.client_id: duplicate client_id "c"/);
    expect(() => parseTenants('f', dup.replace('name: a', 'name: a\n    colour: red'))).toThrow(/colour/);
    expect(() => parseTenants('f', 'tenants: [')).toThrow(/not valid YAML/);
  });

  test('contract defaults and environment parsing', () => {
    const tenants = parseTenants('f', `tenants:\n  - id: a\n    name: a\n    clients: [{ client_id: c, name: c, redirect_uris: ['https://a.example/cb'] }]\n`);
    expect(tenants[0]!.contract).toMatchObject({ login_methods: ['otp'], lockout_threshold: 5, max_devices: 5, account_area: true });
    const config = loadConfig({ PORT: '4000', TRUST_PROXY: 'yes' }, { tenants });
    expect(config.issuer).toBe('http://localhost:4000');
    expect(config.trustProxy).toBe(true);
    expect(config.devMailbox).toBe(true);
    expect(config.otp).toEqual({ length: 8, ttlSeconds: 600, resendCooldownSeconds: 60 });
    expect(() => loadConfig({ OTP_LENGTH: '4' }, { tenants })).toThrow(/OTP_LENGTH/);
    expect(() => loadConfig({ NODE_ENV: 'production' }, { tenants })).toThrow(/COOKIE_KEYS, OTP_HMAC_KEY, JWKS or JWKS_FILE: required in production/);
  });
});
