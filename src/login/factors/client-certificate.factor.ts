import type { CertificateService } from '../../certificates/certificate.service.js';
import type { AccountWithDevices } from '../../persistence/account.repository.js';
import type { Factor, FactorContext, FactorOutcome } from '../factor.js';

const REJECTIONS = {
  foreign: { result: 'wrong_certificate', countsAsFailure: true, messageKey: 'login:certificate.errors.foreign' },
  other_account: { result: 'wrong_certificate', countsAsFailure: true, messageKey: 'login:certificate.errors.other_account' },
  // The user's own certificate, just no longer usable: not a guess, so no lockout count.
  expired: { result: 'expired_certificate', countsAsFailure: false, messageKey: 'login:certificate.errors.expired' },
  revoked: { result: 'revoked_certificate', countsAsFailure: false, messageKey: 'login:certificate.errors.revoked' },
} as const;

/**
 * Proof of possession of the device's client certificate, presented in the TLS handshake of our
 * mutual-TLS listener (or by a trusted TLS-terminating proxy).
 */
export class ClientCertificateFactor implements Factor {
  readonly name = 'client_certificate' as const;
  /**
   * RFC 8176 has no value for "X.509 client certificate" as such. The certificate's key lives in a
   * PKCS#12 file imported into the browser's or the OS's key store, i.e. in software, so `swk` (proof
   * of possession of a software-secured key) is the accurate registered value; `hwk` would claim
   * hardware and `sc` a smart card. Relying sites tell this method apart by its acr.
   */
  readonly amr = ['swk'];

  constructor(
    private readonly deps: {
      certificates: CertificateService;
      /** Public base URL of the mutual-TLS listener, for the link on pages reached without a certificate. */
      mtlsUrl: string | undefined;
    },
  ) {}

  isConfiguredFor(account: AccountWithDevices): Promise<boolean> {
    return this.deps.certificates.hasLiveCertificate(account.id);
  }

  async enter(): Promise<void> {}

  /** Link to this login's page on the mutual-TLS listener, unless the request already came with a certificate. */
  private mtlsLink(ctx: FactorContext): string | undefined {
    if (ctx.clientCertificate || !this.deps.mtlsUrl) return undefined;
    return `${this.deps.mtlsUrl}${ctx.flowUrl}`;
  }

  render(ctx: FactorContext) {
    const presented = ctx.clientCertificate?.x509;
    return {
      view: 'login/certificate',
      locals: {
        userId: ctx.flow.submittedUserId,
        presented: presented ? { subject: presented.subject.replace(/\n/g, ', '), validTo: new Date(presented.validTo) } : undefined,
        mtlsLink: this.mtlsLink(ctx),
      },
    };
  }

  async submit(ctx: FactorContext, _input: Record<string, unknown>): Promise<FactorOutcome> {
    const presented = ctx.clientCertificate;
    if (!presented) {
      const link = this.mtlsLink(ctx);
      return {
        kind: 'rejected',
        result: 'no_certificate',
        countsAsFailure: false,
        messageKey: link ? 'login:certificate.errors.none_with_link' : 'login:certificate.errors.none',
        ...(link ? { messageParams: { url: link } } : {}),
      };
    }
    // Unknown and locked accounts never pass (the flow decides what to show for them).
    if (!ctx.account || !ctx.live) return { kind: 'rejected', ...REJECTIONS.foreign };
    const check = await this.deps.certificates.check(presented.x509, ctx.account);
    return check.ok ? { kind: 'passed' } : { kind: 'rejected', ...REJECTIONS[check.reason] };
  }
}
