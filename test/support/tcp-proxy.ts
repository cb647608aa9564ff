// A TCP proxy in front of a real server (PostgreSQL in the outage tests), to fail it for real the way
// a network does: `freeze()` keeps every connection open but carries no more bytes, and new
// connections are accepted and never answered (a partition, or a stalled server); `thaw()` carries
// bytes again on the connections opened from then on (frozen ones stay stuck, as after a partition).
import net from 'node:net';

export interface TcpProxy {
  port: number;
  freeze(): void;
  thaw(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  let frozen = false;
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  };
  const server = net.createServer((client) => {
    track(client);
    if (frozen) return;
    const upstream = net.connect(targetPort, targetHost);
    track(upstream);
    // A connection frozen once stays frozen: its protocol state is lost with the bytes held back.
    let stuck = false;
    const carry = (from: net.Socket, to: net.Socket) =>
      from.on('data', (chunk) => {
        if (frozen) stuck = true;
        if (!stuck) to.write(chunk);
      });
    carry(client, upstream);
    carry(upstream, client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    freeze: () => void (frozen = true),
    thaw: () => void (frozen = false),
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
