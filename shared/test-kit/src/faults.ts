/**
 * A service that stops answering or goes away, for fault tests: a TCP proxy in front of a real Redis,
 * PostgreSQL or RabbitMQ that the spec can stall and kill. A closed port can only play "refused";
 * this plays the other two ways services fail:
 *
 * - stalled: connections stay open and new ones are accepted, but nothing passes either way; bytes
 *   wait in the proxy, as they would in the kernel buffers of a frozen server (SIGSTOP, a lock
 *   pile-up, a network path that drops packets), and flow again on resume();
 * - killed: every connection is closed and new ones are refused, as with a server that crashed;
 *   revive() then listens on the same port again, as the server does once restarted.
 */
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';

/** A proxy in front of one service. */
export interface StallingProxy extends AsyncDisposable {
  /** The service's URL with its host and port replaced by the proxy's. */
  readonly url: string;
  readonly port: number;
  /** `other` (another database on the same server, say) pointed at the proxy. */
  via(other: string): string;
  /** From now on nothing passes either way, on old and new connections alike. */
  stall(): void;
  /** Passes what was held, and everything after it. */
  resume(): void;
  /** Closes every connection and refuses new ones. */
  kill(): Promise<void>;
  /** After kill(): accepts connections on the same port again (clients keep the address they hold). */
  revive(): Promise<void>;
}

const DEFAULT_PORTS: Record<string, number> = { 'redis:': 6379, 'postgres:': 5432, 'postgresql:': 5432, 'amqp:': 5672 };

/** Starts a proxy on 127.0.0.1 (a free port) in front of the service `serviceUrl` names. */
export async function stallingProxy(serviceUrl: string): Promise<StallingProxy> {
  const target = new URL(serviceUrl);
  const host = target.hostname || '127.0.0.1';
  const targetPort = Number(target.port) || DEFAULT_PORTS[target.protocol] || 0;
  const sockets = new Set<Socket>();
  const held: (() => void)[] = [];
  let stalled = false;

  /** Passes each chunk from `from` to `to`, or holds it while the proxy is stalled. */
  const forward = (from: Socket, to: Socket) => {
    from.on('data', (chunk) => {
      const write = () => to.destroyed || to.write(chunk);
      if (stalled) held.push(write);
      else write();
    });
  };
  const server = createServer((client) => {
    const upstream = connect(targetPort, host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {}); // the other side's close follows
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const via = (other: string) => {
    const proxied = new URL(other);
    proxied.host = `127.0.0.1:${port}`;
    return proxied.toString();
  };
  let killing: Promise<void> | undefined;
  const kill = () =>
    (killing ??= (async () => {
      const closed = new Promise((resolve) => server.close(resolve));
      for (const socket of sockets) socket.destroy();
      await closed;
    })());
  const revive = async () => {
    if (killing === undefined) return;
    await killing;
    // A port closed a moment ago can be bound again at once: Node listens with SO_REUSEADDR.
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    killing = undefined;
  };
  return {
    url: via(serviceUrl),
    port,
    via,
    stall() {
      stalled = true;
    },
    resume() {
      stalled = false;
      // Chunks held for a connection closed meanwhile are dropped.
      for (const write of held.splice(0)) write();
    },
    kill,
    revive,
    [Symbol.asyncDispose]: kill,
  };
}
