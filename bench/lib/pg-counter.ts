// A PostgreSQL wire-protocol proxy that counts the statements a client sends: it forwards both
// directions unchanged and reads only the client → server stream.
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

/** Startup-phase request codes (messages without a type byte). */
const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;

export interface StatementCounts {
  /** Statements executed: one per simple Query ('Q') and one per Execute ('E'). */
  total: number;
  /** SQL text → how many times it was executed. */
  bySql: Map<string, number>;
}

export interface PgCounter {
  /** host:port to put into the client's connection string instead of the real server's. */
  host: string;
  port: number;
  /** Statements since the counter started (a copy: later traffic does not change it). */
  snapshot(): StatementCounts;
  /** Connections the client has opened so far; connections whose stream could not be read (TLS). */
  connections(): { opened: number; opaque: number };
  /** performance.now() (ms) when the last message from any client was seen. */
  lastActivity(): number;
  close(): Promise<void>;
}

/** What happened between two snapshots (`after` taken later). */
export function diffCounts(before: StatementCounts, after: StatementCounts): StatementCounts {
  const bySql = new Map<string, number>();
  for (const [sql, n] of after.bySql) {
    const d = n - (before.bySql.get(sql) ?? 0);
    if (d > 0) bySql.set(sql, d);
  }
  return { total: after.total - before.total, bySql };
}

/** Reads a NUL-terminated string at `offset`; returns it and the offset after the NUL. */
function cstring(buf: Buffer, offset: number): [string, number] {
  const end = buf.indexOf(0, offset);
  if (end < 0) return [buf.toString('utf8', offset), buf.length];
  return [buf.toString('utf8', offset, end), end + 1];
}

/**
 * Starts the proxy on 127.0.0.1 (a free port) in front of `target`. Each connection is parsed on its
 * own: the startup phase (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest: length-prefixed,
 * no type byte), then typed messages. Parse ('P') remembers statement name → SQL, Bind ('B') portal →
 * statement, and Execute ('E') of a portal counts one execution of that statement's SQL.
 */
export async function startPgCounter(target: { host: string; port: number }): Promise<PgCounter> {
  let total = 0;
  const bySql = new Map<string, number>();
  let opened = 0;
  let opaque = 0;
  let last = performance.now();
  const sockets = new Set<Socket>();

  const count = (sql: string) => {
    total++;
    bySql.set(sql, (bySql.get(sql) ?? 0) + 1);
  };

  const server: Server = createServer((client) => {
    opened++;
    const upstream = connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    upstream.on('data', (chunk: Buffer) => client.write(chunk));

    // Per-connection protocol state.
    const statements = new Map<string, string>();
    const portals = new Map<string, string>();
    let startup = true;
    let sslRequested = false;
    let blind = false;
    let pending: Buffer = Buffer.alloc(0);

    const handle = (type: number, body: Buffer) => {
      last = performance.now();
      switch (String.fromCharCode(type)) {
        case 'Q': {
          count(cstring(body, 0)[0]);
          break;
        }
        case 'P': {
          const [name, at] = cstring(body, 0);
          const [sql] = cstring(body, at);
          statements.set(name, sql);
          break;
        }
        case 'B': {
          const [portal, at] = cstring(body, 0);
          const [statement] = cstring(body, at);
          portals.set(portal, statement);
          break;
        }
        case 'E': {
          const [portal] = cstring(body, 0);
          const statement = portals.get(portal);
          count(statement === undefined ? '(unknown portal)' : (statements.get(statement) ?? '(unknown statement)'));
          break;
        }
        case 'C': {
          // Close: 'S' statement or 'P' portal.
          const kind = String.fromCharCode(body[0] ?? 0);
          const [name] = cstring(body, 1);
          if (kind === 'S') statements.delete(name);
          else portals.delete(name);
          break;
        }
        default:
          break;
      }
    };

    client.on('data', (chunk: Buffer) => {
      upstream.write(chunk);
      if (blind) return;
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      for (;;) {
        if (startup) {
          if (pending.length < 8) return;
          const length = pending.readInt32BE(0);
          if (pending.length < length) return;
          const code = pending.readInt32BE(4);
          pending = pending.subarray(length);
          if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
            // The server answers with one byte; an 'S'/'G' would turn the rest into TLS/GSS we cannot read.
            sslRequested = true;
            continue;
          }
          if (code === CANCEL_REQUEST) return;
          startup = false;
          continue;
        }
        if (pending.length < 5) return;
        const length = pending.readInt32BE(1);
        if (pending.length < 1 + length) return;
        handle(pending[0]!, pending.subarray(5, 1 + length));
        pending = pending.subarray(1 + length);
      }
    });
    // The first byte back after an SSLRequest/GSSENCRequest: 'S' or 'G' means the rest is encrypted.
    upstream.once('data', (chunk: Buffer) => {
      if (sslRequested && startup && (chunk[0] === 0x53 || chunk[0] === 0x47)) {
        blind = true;
        opaque++;
      }
    });
    client.pause();
    upstream.once('connect', () => client.resume());
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;

  return {
    host: '127.0.0.1',
    port,
    snapshot: () => ({ total, bySql: new Map(bySql) }),
    connections: () => ({ opened, opaque }),
    lastActivity: () => last,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
