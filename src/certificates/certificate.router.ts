import Router from '@koa/router';
import type { CertificateService } from './certificate.service.js';

/**
 * Public material of the internal CA: the CRL (RFC 5280, DER, named in every certificate's CRL
 * distribution point) and the CA certificate. Personal downloads (PKCS#12) belong to the account area.
 */
export function certificateRouter(deps: { certificates: CertificateService }) {
  const router = new Router({ prefix: '/certificates' });

  router.get('/crl', async (ctx) => {
    const der = await deps.certificates.crl();
    ctx.type = 'application/pkix-crl';
    ctx.set('Content-Disposition', 'inline; filename="crl.der"');
    ctx.body = der;
  });

  router.get('/ca.pem', async (ctx) => {
    ctx.type = 'application/x-pem-file';
    ctx.set('Content-Disposition', 'inline; filename="ca.pem"');
    ctx.body = await deps.certificates.caPem();
  });

  return router;
}
