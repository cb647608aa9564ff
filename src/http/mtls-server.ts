import { webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import { isIP, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { loadX509 } from '../certificates/x509.js';
import { ConfigError, type AppConfig } from '../config/index.js';

export interface TlsCredentials {
  key: string;
  cert: string;
}

/**
 * The mutual-TLS listener: HTTPS that asks every client for a certificate (`requestCert`) but lets
 * the handshake succeed without one or with an unknown one (`rejectUnauthorized: false`), so the login
 * page can say clearly what is wrong instead of the browser showing a TLS error. `ca` is our client CA:
 * browsers then offer only certificates it issued. The application checks the certificate itself.
 */
export function createMtlsServer(opts: TlsCredentials & { ca: string[]; handler: (req: IncomingMessage, res: ServerResponse) => void }): Server {
  return createServer({ key: opts.key, cert: opts.cert, ca: opts.ca, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' }, opts.handler);
}

/** Starts the listener on `port` (0: any free one); resolves with the port actually bound. */
export async function listenMtls(server: Server, port: number, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/**
 * MTLS_KEY_FILE + MTLS_CERT_FILE; outside production a self-signed server certificate (P-256) for the
 * issuer's host, localhost and the loopback addresses is generated once under DATA_DIR/mtls.
 */
export async function loadMtlsCredentials(config: Pick<AppConfig, 'env' | 'dataDir' | 'issuer' | 'certificates'>): Promise<TlsCredentials> {
  const { keyFile, certFile } = config.certificates.mtls;
  if (keyFile || certFile) {
    if (!keyFile || !certFile) throw new ConfigError('MTLS_KEY_FILE and MTLS_CERT_FILE must be set together');
    try {
      return { key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8') };
    } catch (e) {
      throw new ConfigError(`cannot read the mutual-TLS server key or certificate: ${(e as Error).message}`);
    }
  }
  if (config.env === 'production') throw new ConfigError('MTLS_KEY_FILE and MTLS_CERT_FILE are required in production when MTLS_PORT is set');
  const dir = join(config.dataDir, 'mtls');
  const files = { key: join(dir, 'server.key.pem'), cert: join(dir, 'server.cert.pem') };
  if (!existsSync(files.key) || !existsSync(files.cert)) {
    const generated = await generateSelfSignedServerCertificate(new URL(config.issuer).hostname);
    mkdirSync(dir, { recursive: true });
    writeFileSync(files.key, generated.key, { mode: 0o600 });
    writeFileSync(files.cert, generated.cert);
  }
  return { key: readFileSync(files.key, 'utf8'), cert: readFileSync(files.cert, 'utf8') };
}

export async function generateSelfSignedServerCertificate(hostname: string): Promise<TlsCredentials> {
  const x509 = await loadX509();
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const names = new Set([hostname, 'localhost', '127.0.0.1', '::1']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: [{ CN: [hostname] }],
    notBefore: new Date(Date.now() - 5 * 60_000),
    notAfter: new Date(Date.now() + 825 * 86400_000),
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([...names].map((n) => (isIP(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n }))),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { key: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'), cert: cert.toString('pem') };
}

/** Loads (or generates) the server credentials, then serves `handler` with mutual TLS; main.ts and tests share it. */
export async function startMtlsListener(opts: {
  config: Pick<AppConfig, 'env' | 'dataDir' | 'issuer' | 'certificates'>;
  caPem: string;
  handler: (req: IncomingMessage, res: ServerResponse) => void;
  port: number;
  host: string;
}): Promise<{ server: Server; port: number; credentials: TlsCredentials }> {
  const credentials = await loadMtlsCredentials(opts.config);
  const server = createMtlsServer({ ...credentials, ca: [opts.caPem], handler: opts.handler });
  const port = await listenMtls(server, opts.port, opts.host);
  return { server, port, credentials };
}
