import { X509Certificate } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';

/** A client certificate presented with a request; not yet checked against anything. */
export interface PresentedCertificate {
  x509: X509Certificate;
  /** PEM, as oidc-provider's mTLS feature wants it. */
  pem: string;
  /** `tls`: our own mutual-TLS listener; `proxy`: a trusted reverse proxy's header. */
  via: 'tls' | 'proxy';
}

export type ClientCertificateReader = (req: IncomingMessage) => PresentedCertificate | undefined;

const bare = (ip: string | undefined) => (ip?.startsWith('::ffff:') ? ip.slice(7) : ip);

function trustedProxyList(entries: string[]): BlockList {
  const list = new BlockList();
  for (const entry of entries) {
    const [address = '', bits] = entry.split('/');
    const family = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (!isIP(address)) throw new Error(`TRUSTED_PROXIES: "${entry}" is not an address or CIDR range`);
    if (bits === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(bits), family);
  }
  return list;
}

/** Parses a proxy's header: URL-encoded PEM (nginx $ssl_client_escaped_cert), plain PEM, or base64 DER. */
function parseHeader(value: string): X509Certificate | undefined {
  try {
    const text = value.includes('%') ? decodeURIComponent(value) : value;
    if (text.includes('-----BEGIN CERTIFICATE-----')) return new X509Certificate(text);
    return new X509Certificate(Buffer.from(text.replace(/\s+/g, ''), 'base64'));
  } catch {
    return undefined;
  }
}

/**
 * Reads the client certificate of a request: (a) the TLS peer certificate, when the request came
 * over our own mutual-TLS listener; (b) `header`, only when the TCP peer (never X-Forwarded-For) is one
 * of the trusted proxies, since anyone can send a header. Memoised per request.
 */
export function clientCertificateReader(opts: { header: string | undefined; trustedProxies: string[] }): ClientCertificateReader {
  const header = opts.header?.toLowerCase();
  const trusted = trustedProxyList(opts.trustedProxies);
  const seen = new WeakMap<IncomingMessage, PresentedCertificate | null>();

  const read = (req: IncomingMessage): PresentedCertificate | undefined => {
    const socket = req.socket as Partial<TLSSocket>;
    if (socket.encrypted && typeof socket.getPeerX509Certificate === 'function') {
      const x509 = socket.getPeerX509Certificate();
      if (x509) return { x509, pem: x509.toString(), via: 'tls' };
    }
    if (!header || opts.trustedProxies.length === 0) return undefined;
    const peer = bare(req.socket.remoteAddress);
    if (!peer || !trusted.check(peer, isIP(peer) === 6 ? 'ipv6' : 'ipv4')) return undefined;
    const raw = req.headers[header];
    const value = Array.isArray(raw) ? raw[0] : raw;
    if (!value) return undefined;
    const x509 = parseHeader(value);
    return x509 ? { x509, pem: x509.toString(), via: 'proxy' } : undefined;
  };

  return (req) => {
    let found = seen.get(req);
    if (found === undefined) {
      found = read(req) ?? null;
      seen.set(req, found);
    }
    return found ?? undefined;
  };
}
