import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';

/**
 * Special-use addresses an outgoing request must not reach (IANA IPv4/IPv6 special-purpose registries):
 * unspecified, loopback, private (RFC 1918), shared (CGNAT), link-local, unique-local, multicast,
 * reserved, documentation and benchmarking ranges, NAT64 and the IPv4-compatible block. Node's
 * BlockList matches IPv4-mapped IPv6 (::ffff:a.b.c.d, ::ffff:7f00:1) against the IPv4 rules.
 */
const SPECIAL_USE = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  SPECIAL_USE.addSubnet(network, prefix, 'ipv4');
for (const [network, prefix] of [
  ['::', 96], // unspecified, loopback ::1 and the deprecated IPv4-compatible ::a.b.c.d
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001::', 23],
  ['2001:db8::', 32],
  ['2002::', 16],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const)
  SPECIAL_USE.addSubnet(network, prefix, 'ipv6');

/** Whether an IP address is loopback, private, link-local, unique-local or another special-use address. */
export function isSpecialUseAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true; // not an address at all: refuse rather than guess
  return SPECIAL_USE.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

export class OutboundRequestRefused extends Error {
  constructor(url: URL, reason: string) {
    super(`outgoing request to ${url.origin} refused: ${reason}`);
    this.name = 'OutboundRequestRefused';
  }
}

export type Resolve = (hostname: string) => Promise<string[]>;

/** Every address the system resolver gives for a host name (an IP literal resolves to itself). */
export const resolveAll: Resolve = async (hostname) => (await lookup(hostname, { all: true, verbatim: true })).map((a) => a.address);

/** Throws unless the URL is http(s) and every address its host resolves to is a public one. */
export async function assertPublicDestination(url: URL, resolve: Resolve = resolveAll): Promise<void> {
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new OutboundRequestRefused(url, `scheme ${url.protocol} not allowed`);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  let addresses: string[];
  try {
    addresses = await resolve(host);
  } catch (e) {
    throw new OutboundRequestRefused(url, `cannot resolve ${host} (${(e as Error).message})`);
  }
  if (addresses.length === 0) throw new OutboundRequestRefused(url, `${host} resolves to nothing`);
  const internal = addresses.find(isSpecialUseAddress);
  if (internal) throw new OutboundRequestRefused(url, `${host} resolves to ${internal}, a loopback, private or other special-use address`);
}

type FetchInit = RequestInit & { dispatcher?: unknown };

/**
 * oidc-provider's `fetch`. Its own SSRF guard (a dispatcher that drops connections to special-use
 * addresses) depends on undici internals and is not promised on Node 20, so this one checks before
 * connecting, on every Node version: a request goes out only when every address of its host is
 * public, and it follows no redirect (a public host could redirect inward). The `trusted` URLs (the
 * back-channel logout URIs the integrator registered in config/, often on an internal network) are
 * the exception: they go out as they are, without the library's dispatcher either.
 */
export function createOutboundFetch(opts: { trusted: Iterable<string>; resolve?: Resolve; fetch?: typeof fetch }): (input: string | URL | Request, init?: RequestInit) => Promise<Response> {
  const trusted = new Set([...opts.trusted].map((u) => new URL(u).href));
  const doFetch = opts.fetch ?? globalThis.fetch;
  return async (input, init = {}) => {
    const url = new URL(input instanceof Request ? input.url : input);
    if (trusted.has(url.href)) {
      const { dispatcher: _ssrfGuard, ...rest } = init as FetchInit;
      return doFetch(input, rest);
    }
    await assertPublicDestination(url, opts.resolve);
    // The library's dispatcher, when it has one, stays as a second check at connect time (DNS rebinding).
    return doFetch(input, { ...init, redirect: 'manual' });
  };
}
