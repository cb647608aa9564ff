import { provedInSession } from '../../src/login/factor.js';
import { ClientCertificateFactor } from '../../src/login/factors/client-certificate.factor.js';
import { PasskeyFactor } from '../../src/login/factors/passkey.factor.js';
import type { PasskeyService } from '../../src/passkey/passkey.service.js';
import type { CertificateService } from '../../src/certificates/certificate.service.js';

// Only the factors' amr rules are used: no service is called.
const passkey = new PasskeyFactor({ passkeys: {} as PasskeyService });
const certificate = new ClientCertificateFactor({ certificates: {} as CertificateService, mtlsUrl: undefined });

describe("a session's amr and the passkey factor (step-up)", () => {
  test.each([
    [['hwk', 'user'], true],
    [['swk', 'user'], true],
    [['otp', 'hwk', 'user'], true],
    // password + client certificate asserts swk too, but no user verification: not a passkey.
    [['pwd', 'swk'], false],
    [['otp'], false],
    [['user'], false],
  ])('%j proves a passkey: %s', (amr, expected) => {
    expect(provedInSession(passkey, amr)).toBe(expected);
  });

  test('the certificate factor is still recognised by its own amr', () => {
    expect(provedInSession(certificate, ['pwd', 'swk'])).toBe(true);
    expect(provedInSession(certificate, ['otp'])).toBe(false);
  });
});
