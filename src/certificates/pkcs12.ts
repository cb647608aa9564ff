import forge from 'node-forge';

/**
 * A PKCS#12 file (private key, certificate, CA chain) protected by `password`, written with node-forge
 * (@peculiar/x509 cannot write PKCS#12). The key bag uses pbeWithSHAAnd3-KeyTripleDES-CBC with a SHA-1
 * MAC: the one combination that Windows, macOS Keychain, Android and every browser import, where the
 * newer PBES2/AES files are still refused by some key stores. The password only guards the download.
 */
export function writePkcs12(input: { keyPkcs8Pem: string; certificatePem: string; chainPems: string[]; password: string; friendlyName: string }): Buffer {
  const key = forge.pki.privateKeyFromPem(input.keyPkcs8Pem);
  const certs = [input.certificatePem, ...input.chainPems].map((pem) => forge.pki.certificateFromPem(pem));
  const asn1 = forge.pkcs12.toPkcs12Asn1(key, certs, input.password, {
    algorithm: '3des',
    count: 10000,
    friendlyName: input.friendlyName,
    generateLocalKeyId: true,
  });
  return Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary');
}
