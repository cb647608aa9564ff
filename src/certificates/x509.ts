// @peculiar/x509 resolves its algorithm providers through tsyringe, which needs the Reflect metadata
// polyfill loaded first; and it signs through WebCrypto, here Node's. Get x509 from this module only.
// Loaded on first use: a deployment whose contracts use no certificates never holds the libraries
// (about 10-15 MiB of a process).
import { webcrypto } from 'node:crypto';
import type * as X509 from '@peculiar/x509';

export type { X509 };

let loading: Promise<typeof X509> | undefined;

export function loadX509(): Promise<typeof X509> {
  loading ??= (async () => {
    await import('reflect-metadata');
    const x509 = await import('@peculiar/x509');
    x509.cryptoProvider.set(webcrypto as unknown as Crypto);
    return x509;
  })();
  return loading;
}
