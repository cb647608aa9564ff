import { X509Certificate as NodeX509Certificate, createHash, webcrypto } from 'node:crypto';
import type { TenantDirectory } from '../config/index.js';
import type { AccountRepository, AccountWithDevices, Device } from '../persistence/account.repository.js';
import type { Certificate, CertificateRepository } from '../persistence/certificate.repository.js';
import { RSA_SIGNING, randomSerial, loadX509, type CertificateAuthority } from './certificate-authority.js';
import type { X509 } from './x509.js';
import { DownloadPasswordBox, randomDownloadPassword } from './download-password.js';

/** Why a certificate was revoked (shown in the device table; mapped to CRL reason codes). */
export type RevocationReason = 'device_deleted' | 'method_changed' | 'superseded' | 'account_deleted' | 'admin';

/** CRL reason (RFC 5280) per revocation reason. */
const CRL_REASON: Record<string, keyof typeof X509.X509CrlReason> = {
  device_deleted: 'cessationOfOperation',
  method_changed: 'cessationOfOperation',
  account_deleted: 'cessationOfOperation',
  superseded: 'superseded',
  admin: 'unspecified',
};

/** Days before expiry from which the account area offers renewal. */
export const RENEWAL_WINDOW_DAYS = 30;
/** How long a published CRL stays current; it is re-signed sooner after any revocation. */
const CRL_LIFETIME_SECONDS = 24 * 3600;
const CRL_REFRESH_SECONDS = 3600;

export type CertificateStatus = 'valid' | 'expired' | 'revoked';

/** One certificate as the account area's device table shows it. */
export interface CertificateSummary {
  id: string;
  deviceId: string | null;
  serial: string;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  revokedAt: Date | null;
  reason: string | null;
  status: CertificateStatus;
  /** 証明書ダウンロード用パスワード, in clear (the manual shows it in the device table). */
  downloadPassword: string;
  /** Valid and within RENEWAL_WINDOW_DAYS of its expiry. */
  renewable: boolean;
}

export interface IssuedCertificate {
  certificate: Certificate;
  downloadPassword: string;
}

/** A presented certificate, checked against our CA, its validity, revocation and the account. */
export type CertificateCheck =
  | { ok: true; certificate: Certificate }
  | { ok: false; reason: 'foreign' | 'other_account' | 'revoked' | 'expired' };

export const fingerprintOf = (der: Buffer) => createHash('sha256').update(der).digest('hex');

/**
 * The devices' client certificates (password_certificate method): issue one per device from the
 * internal CA, PKCS#12 downloads, renewal, revocation with a published CRL, and the checks the login
 * factor needs. The CA is loaded on first use (generating one costs about a second).
 */
export class CertificateService {
  private authorityPromise: Promise<CertificateAuthority> | undefined;
  private box: DownloadPasswordBox | undefined;
  private crlCache: { der: Buffer; signedAt: number; state: string } | undefined;
  private crlNumber = 0;

  constructor(
    private readonly deps: {
      repo: CertificateRepository;
      accounts: AccountRepository;
      tenants: TenantDirectory;
      loadAuthority: () => Promise<CertificateAuthority>;
      loadSecret: () => string;
      /** Base URL for the CRL distribution point written into certificates. */
      issuer: string;
    },
  ) {}

  authority(): Promise<CertificateAuthority> {
    this.authorityPromise ??= this.deps.loadAuthority().catch((e: unknown) => {
      this.authorityPromise = undefined;
      throw e;
    });
    return this.authorityPromise;
  }

  /** Loads the CA and the download-password secret now (production start), so a missing one fails early. */
  async ready(): Promise<void> {
    await this.authority();
    this.passwords();
  }

  private passwords(): DownloadPasswordBox {
    this.box ??= new DownloadPasswordBox(this.deps.loadSecret());
    return this.box;
  }

  async caPem(): Promise<string> {
    return (await this.authority()).pem;
  }

  private async accountAndDevice(accountId: string, deviceId: string): Promise<{ account: AccountWithDevices; device: Device }> {
    const account = await this.deps.accounts.findById(accountId);
    const device = account?.devices.find((d) => d.id === deviceId);
    if (!account || !device) throw new Error(`no device ${deviceId} on account ${accountId}`);
    return { account, device };
  }

  /**
   * Issues a certificate for a device (replacing and revoking its previous one): subject CN=<user ID>,
   * O=<tenant>, the device's e-mail as an rfc822Name, clientAuth only, validity from the contract.
   * `validity` overrides the dates (tests of expired certificates).
   */
  async issue(accountId: string, deviceId: string, validity?: { notBefore: Date; notAfter: Date }): Promise<IssuedCertificate> {
    const { account, device } = await this.accountAndDevice(accountId, deviceId);
    const tenant = this.deps.tenants.tenant(account.tenantId);
    const ca = await this.authority();
    const x509 = await loadX509();
    const now = Date.now();
    // Backdated a little so clocks slightly behind ours accept a fresh certificate.
    const notBefore = validity?.notBefore ?? new Date(now - 5 * 60_000);
    const notAfter = validity?.notAfter ?? new Date(now + (tenant?.contract.certificate_validity_days ?? 365) * 86400_000);
    const keys = (await webcrypto.subtle.generateKey({ ...RSA_SIGNING, modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]) }, true, ['sign', 'verify'])) as CryptoKeyPair;
    const serial = randomSerial();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: [{ CN: [account.userId] }, { O: [tenant?.name ?? account.tenantId] }],
      issuer: ca.certificate.subjectName,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: ca.signingKey,
      signingAlgorithm: RSA_SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'email', value: device.email }]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await authorityKeyId(ca),
        new x509.CRLDistributionPointsExtension([`${this.deps.issuer}/certificates/crl`]),
      ],
    });
    const certificatePem = cert.toString('pem');
    const keyPkcs8Pem = x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
    const downloadPassword = randomDownloadPassword();
    // node-forge, loaded with the first certificate issued.
    const { writePkcs12 } = await import('./pkcs12.js');
    const pkcs12 = writePkcs12({ keyPkcs8Pem, certificatePem, chainPems: [ca.pem], password: downloadPassword, friendlyName: `${account.userId} (${device.email})` });
    const certificate = await this.deps.repo.createReplacing(
      {
        accountId,
        deviceId,
        serial,
        subject: cert.subject,
        fingerprint: fingerprintOf(Buffer.from(cert.rawData)),
        notBefore: cert.notBefore,
        notAfter: cert.notAfter,
        certificatePem,
        pkcs12: new Uint8Array(pkcs12),
        downloadPasswordEnc: this.passwords().seal(downloadPassword),
      },
      'superseded',
    );
    this.crlCache = undefined;
    return { certificate, downloadPassword };
  }

  /** Issues certificates for every device of the account that has no live one (e.g. on switching to the certificate method). */
  async issueForAccount(accountId: string): Promise<IssuedCertificate[]> {
    const account = await this.deps.accounts.findById(accountId);
    if (!account) return [];
    const issued: IssuedCertificate[] = [];
    for (const device of account.devices) {
      const current = await this.deps.repo.findCurrentForDevice(accountId, device.id);
      if (current && current.notAfter.getTime() > Date.now()) continue;
      issued.push(await this.issue(accountId, device.id));
    }
    return issued;
  }

  /** A new certificate for the device before the current one expires; the current one is revoked as superseded. */
  renew(accountId: string, deviceId: string): Promise<IssuedCertificate> {
    return this.issue(accountId, deviceId);
  }

  /** Revokes the device's certificates (device deleted). */
  async revokeForDevice(deviceId: string, reason: RevocationReason = 'device_deleted'): Promise<number> {
    return this.revoked(await this.deps.repo.revoke({ deviceId }, reason));
  }

  /** Revokes, with a reason, the account's certificates whose device row is already gone. */
  async revokeDetached(accountId: string, reason: RevocationReason = 'device_deleted'): Promise<number> {
    return this.revoked(await this.deps.repo.revoke({ accountId, deviceId: null }, reason));
  }

  /** Revokes all the account's certificates (leaving the certificate method, account deleted). */
  async revokeForAccount(accountId: string, reason: RevocationReason = 'method_changed'): Promise<number> {
    return this.revoked(await this.deps.repo.revoke({ accountId }, reason));
  }

  async revoke(certificateId: string, reason: RevocationReason = 'admin'): Promise<number> {
    return this.revoked(await this.deps.repo.revoke({ id: certificateId }, reason));
  }

  private revoked(count: number): number {
    if (count > 0) this.crlCache = undefined; // the next CRL request re-signs it
    return count;
  }

  /** The account's certificates, newest first, with their download passwords in clear. */
  async listForAccount(accountId: string, now = new Date()): Promise<CertificateSummary[]> {
    const rows = await this.deps.repo.listForAccount(accountId);
    return rows.map((c) => {
      const status: CertificateStatus = c.revokedAt || !c.deviceId ? 'revoked' : c.notAfter <= now ? 'expired' : 'valid';
      return {
        id: c.id,
        deviceId: c.deviceId,
        serial: c.serial,
        subject: c.subject,
        notBefore: c.notBefore,
        notAfter: c.notAfter,
        revokedAt: c.revokedAt,
        reason: c.reason,
        status,
        downloadPassword: this.passwords().open(c.downloadPasswordEnc),
        renewable: status === 'valid' && c.notAfter.getTime() - now.getTime() < RENEWAL_WINDOW_DAYS * 86400_000,
      };
    });
  }

  /**
   * The PKCS#12 download of a device's current certificate, for the account area to serve to the
   * signed-in owner (the caller checks the session); null when the device has none.
   */
  async pkcs12For(accountId: string, deviceId: string): Promise<{ filename: string; contentType: string; data: Buffer; downloadPassword: string } | null> {
    const c = await this.deps.repo.findCurrentForDevice(accountId, deviceId);
    if (!c) return null;
    const account = await this.deps.accounts.findById(accountId);
    const device = account?.devices.find((d) => d.id === deviceId);
    const name = `${account?.userId ?? 'certificate'}-${device?.number ?? 0}`.replace(/[^A-Za-z0-9._-]/g, '_');
    return { filename: `${name}.p12`, contentType: 'application/x-pkcs12', data: Buffer.from(c.pkcs12), downloadPassword: this.passwords().open(c.downloadPasswordEnc) };
  }

  /** Whether the account holds a certificate that can be used now. */
  hasLiveCertificate(accountId: string): Promise<boolean> {
    return this.deps.repo.hasLive(accountId);
  }

  /**
   * Checks a presented certificate for a login: signed by our CA (OpenSSL verifies the signature),
   * known to us, this account's, on a live device, unrevoked and within its validity.
   */
  async check(presented: NodeX509Certificate, account: AccountWithDevices, now = new Date()): Promise<CertificateCheck> {
    const ca = await this.authority();
    if (!presented.checkIssued(ca.node) || !presented.verify(ca.node.publicKey)) return { ok: false, reason: 'foreign' };
    const stored = await this.deps.repo.findByFingerprint(fingerprintOf(presented.raw));
    if (!stored) return { ok: false, reason: 'foreign' }; // issued by a CA key we hold, but not recorded here
    if (stored.accountId !== account.id) return { ok: false, reason: 'other_account' };
    if (stored.revokedAt || !stored.deviceId || !account.devices.some((d) => d.id === stored.deviceId)) return { ok: false, reason: 'revoked' };
    if (new Date(presented.validFrom) > now || new Date(presented.validTo) <= now) return { ok: false, reason: 'expired' };
    return { ok: true, certificate: stored };
  }

  /**
   * The CRL (DER), signed by the CA: re-signed when a revocation happened since the last one, or when
   * it is an hour old (it is valid for a day), so several instances converge quickly.
   */
  async crl(now = new Date()): Promise<Buffer> {
    const entries = await this.deps.repo.listForCrl(now);
    const state = createHash('sha256').update(JSON.stringify(entries.map((e) => [e.serial, e.revokedAt?.getTime() ?? null]))).digest('hex');
    const cached = this.crlCache;
    if (cached && cached.state === state && now.getTime() - cached.signedAt < CRL_REFRESH_SECONDS * 1000) return cached.der;
    const ca = await this.authority();
    const x509 = await loadX509();
    // CRL numbers must increase (RFC 5280 5.2.3): seconds since the epoch do across restarts and instances.
    this.crlNumber = Math.max(this.crlNumber + 1, Math.floor(now.getTime() / 1000));
    const crl = await x509.X509CrlGenerator.create({
      issuer: ca.certificate.subjectName,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + CRL_LIFETIME_SECONDS * 1000),
      signingAlgorithm: RSA_SIGNING,
      signingKey: ca.signingKey,
      entries: entries.map((e) => ({
        serialNumber: e.serial,
        revocationDate: e.revokedAt ?? e.createdAt,
        reason: x509.X509CrlReason[CRL_REASON[e.reason ?? 'device_deleted'] ?? 'cessationOfOperation'],
      })),
      extensions: [await authorityKeyId(ca), new x509.Extension('2.5.29.20', false, derInteger(this.crlNumber))],
    });
    const der = Buffer.from(crl.rawData);
    this.crlCache = { der, signedAt: now.getTime(), state };
    return der;
  }
}

/** The CA's own key identifier when its certificate has one (an operator's CA may use another method than ours). */
async function authorityKeyId(ca: CertificateAuthority): Promise<X509.AuthorityKeyIdentifierExtension> {
  const x509 = await loadX509();
  const ski = ca.certificate.getExtension(x509.SubjectKeyIdentifierExtension);
  return ski ? new x509.AuthorityKeyIdentifierExtension(ski.keyId) : x509.AuthorityKeyIdentifierExtension.create(ca.certificate.publicKey);
}

/** DER INTEGER of a non-negative number (the cRLNumber extension's value). */
function derInteger(n: number): Uint8Array<ArrayBuffer> {
  let hex = n.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  let bytes = Buffer.from(hex, 'hex');
  if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return Uint8Array.from(Buffer.concat([Buffer.from([0x02, bytes.length]), bytes]));
}
