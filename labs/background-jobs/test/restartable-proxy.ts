/**
 * A TCP proxy in front of a real service that can go down and come back on the same address, as a
 * database does when it restarts. The test kit's stallingProxy plays "stalled" and, once killed, "down
 * for good"; a worker keeps the address it was given, so to see its jobs done once the database is back,
 * the address itself must start answering again.
 *
 * - down(): every connection is closed and the port stops listening, so a new connection is refused
 *   (ECONNREFUSED), exactly as with a closed port;
 * - up(): the same port listens again, and connections pass to the service.
 */
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';

export interface RestartableProxy extends AsyncDisposable {
  /** The service's URL with its host and port replaced by the proxy's. */
  readonly url: string;
  down(): Promise<void>;
  up(): Promise<void>;
}

/** Starts a proxy (up) on a free loopback port in front of the service `serviceUrl` names. */
export async function restartableProxy(serviceUrl: string): Promise<RestartableProxy> {
  const target = new URL(serviceUrl);
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(target.port) || 5432, target.hostname || '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {}); // the other side's close follows
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  await listen(0);
  const { port } = server.address() as AddressInfo;
  const proxied = new URL(serviceUrl);
  proxied.host = `127.0.0.1:${port}`;
  const down = async () => {
    if (!server.listening) return;
    const closed = new Promise((resolve) => server.close(resolve));
    for (const socket of sockets) socket.destroy();
    await closed;
  };
  return {
    url: proxied.toString(),
    down,
    // The same port: a listening port closed a moment ago can be bound again at once (Node sets
    // SO_REUSEADDR), and the clients hold this address.
    up: () => (server.listening ? Promise.resolve() : listen(port)),
    [Symbol.asyncDispose]: down,
  };
}
