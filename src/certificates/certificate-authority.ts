// Library choice: @peculiar/x509 (PeculiarVentures, typed, maintained, on WebCrypto) builds the
// certificates and the CRL, which node-forge cannot produce; node-forge 1.x is used only for what
// @peculiar/x509 lacks, writing the PKCS#12 file (see pkcs12.ts). Presented certificates are checked
// with Node's own crypto.X509Certificate (OpenSSL), so verification needs neither library.
import { X509Certificate as NodeX509Certificate, createPrivateKey, webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, type AppConfig } from '../config/index.js';
import { loadX509, type X509 } from './x509.js';

/** RSA with SHA-256: every browser, OS key store and TLS stack accepts it (PKCS#12 writing needs RSA too). */
export const RSA_SIGNING = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as const;
const rsaKeyGen = (modulusLength: number): RsaHashedKeyGenParams => ({ ...RSA_SIGNING, modulusLength, publicExponent: new Uint8Array([1, 0, 1]) });

/** The internal certificate authority that issues the devices' client certificates. */
export interface CertificateAuthority {
  certificate: X509.X509Certificate;
  /** Node's (OpenSSL's) view of the same certificate, for verifying presented certificates. */
  node: NodeX509Certificate;
  pem: string;
  signingKey: CryptoKey;
}

export type CaSettings = Pick<AppConfig, 'env' | 'dataDir' | 'issuer' | 'tenants' | 'certificates'>;

/** Whether any contract lets accounts sign in with a client certificate (then production needs a CA). */
export const certificatesInUse = (config: Pick<AppConfig, 'tenants'>) => config.tenants.some((t) => t.contract.login_methods.includes('password_certificate'));

function readFile(label: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read ${label} ${file}: ${(e as Error).message}`);
  }
}

async function fromPem(certPem: string, keyPem: string, source: string): Promise<CertificateAuthority> {
  let node: NodeX509Certificate;
  let keyObject: ReturnType<typeof createPrivateKey>;
  try {
    node = new NodeX509Certificate(certPem);
    keyObject = createPrivateKey(keyPem);
  } catch (e) {
    throw new ConfigError(`${source}: not a PEM certificate and private key: ${(e as Error).message}`);
  }
  if (keyObject.asymmetricKeyType !== 'rsa') throw new ConfigError(`${source}: the CA key must be an RSA key (PKCS#12 files are written with RSA)`);
  if (!node.ca) throw new ConfigError(`${source}: the CA certificate lacks basicConstraints cA=true`);
  if (!node.checkPrivateKey(keyObject)) throw new ConfigError(`${source}: the CA key does not match the CA certificate`);
  const x509 = await loadX509();
  const der = keyObject.export({ type: 'pkcs8', format: 'der' });
  const signingKey = await webcrypto.subtle.importKey('pkcs8', der, RSA_SIGNING, false, ['sign']);
  const certificate = new x509.X509Certificate(node.raw);
  return { certificate, node, pem: certificate.toString('pem'), signingKey };
}

/** A fresh CA (RSA 3072, 10 years), for development and tests. */
export async function generateCertificateAuthority(commonName: string): Promise<{ certPem: string; keyPem: string }> {
  const x509 = await loadX509();
  const keys = (await webcrypto.subtle.generateKey(rsaKeyGen(3072), true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [commonName] }, { O: ['Anshin Login'] }],
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(now + 10 * 365 * 86400_000),
    keys,
    signingAlgorithm: RSA_SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return { certPem: cert.toString('pem'), keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') };
}

/**
 * CA_CERT_FILE + CA_KEY_FILE; outside production, generated once and kept under DATA_DIR/ca so
 * certificates stay valid across restarts. Production without them is a configuration error.
 */
export async function loadCertificateAuthority(config: CaSettings): Promise<CertificateAuthority> {
  const { caCertFile, caKeyFile } = config.certificates;
  if (caCertFile || caKeyFile) {
    if (!caCertFile || !caKeyFile) throw new ConfigError('CA_CERT_FILE and CA_KEY_FILE must be set together');
    return fromPem(readFile('CA_CERT_FILE', caCertFile), readFile('CA_KEY_FILE', caKeyFile), 'CA_CERT_FILE/CA_KEY_FILE');
  }
  if (config.env === 'production') throw new ConfigError('CA_CERT_FILE and CA_KEY_FILE are required in production when a contract allows password_certificate');
  const dir = join(config.dataDir, 'ca');
  const certFile = join(dir, 'ca.cert.pem');
  const keyFile = join(dir, 'ca.key.pem');
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    const { certPem, keyPem } = await generateCertificateAuthority(`Anshin Login Client CA (${new URL(config.issuer).hostname})`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(keyFile, keyPem, { mode: 0o600 });
    writeFileSync(certFile, certPem);
  }
  return fromPem(readFileSync(certFile, 'utf8'), readFileSync(keyFile, 'utf8'), certFile);
}

/** A random positive 128-bit serial number (RFC 5280: at most 20 octets, unpredictable), lower-case hex. */
export function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x40; // positive and without a leading zero octet
  return Buffer.from(bytes).toString('hex');
}

export { loadX509 };
