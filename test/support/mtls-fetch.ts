import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';

/** TLS options of the client side: a client certificate (pfx + passphrase, or key + cert) and the server's CA. */
export type ClientTls = Pick<RequestOptions, 'pfx' | 'passphrase' | 'key' | 'cert' | 'ca'>;

/**
 * A fetch over node:https that presents a client certificate in a real TLS handshake (the global
 * fetch cannot). Redirects are never followed; `rewrite` can send a URL elsewhere (e.g. the issuer's
 * token endpoint to the mutual-TLS listener).
 */
export function mtlsFetch(tls: ClientTls, rewrite: (url: URL) => URL = (u) => u): typeof fetch {
  return (async (input: string | URL | Request, init: RequestInit = {}) => {
    const url = rewrite(new URL(input instanceof Request ? input.url : input.toString()));
    const headers = new Headers(init.headers);
    const body = init.body == null ? undefined : typeof init.body === 'string' ? init.body : init.body instanceof URLSearchParams ? init.body.toString() : String(init.body);
    if (body !== undefined && !headers.has('content-length')) headers.set('content-length', String(Buffer.byteLength(body)));
    const requestFn = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<Response>((resolve, reject) => {
      const req = requestFn(
        url,
        { method: init.method ?? 'GET', headers: Object.fromEntries(headers), ...(url.protocol === 'https:' ? { ...tls, agent: false } : {}) },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const out = new Headers();
            for (const [name, value] of Object.entries(res.headers)) {
              if (Array.isArray(value)) for (const v of value) out.append(name, v);
              else if (value !== undefined) out.set(name, value);
            }
            const status = res.statusCode ?? 500;
            const buf = Buffer.concat(chunks);
            resolve(new Response(status === 204 || status === 304 || buf.length === 0 ? null : buf, { status, headers: out }));
          });
        },
      );
      req.on('error', reject);
      if (body !== undefined) req.write(body);
      req.end();
    });
  }) as typeof fetch;
}
