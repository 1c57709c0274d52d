/**
 * A service that stops answering, for fault tests: a TCP proxy in front of a real Redis or PostgreSQL
 * (or RabbitMQ) that forwards everything until `stall()`, then forwards nothing more in either
 * direction and accepts new connections without ever answering them. That is a server that is up and
 * then freezes (SIGSTOP, overload, a network that drops everything), which a closed port cannot play.
 */
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';

/** A stallable proxy in front of one service. */
export interface StallingProxy extends AsyncDisposable {
  /** The service's URL with its host and port replaced by the proxy's. */
  readonly url: string;
  readonly port: number;
  /** From now on nothing passes, and new connections are accepted and never answered. */
  stall(): void;
}

/** Starts a proxy in front of the service at `serviceUrl` (redis://, postgres://, amqp://). */
export async function stallingProxy(serviceUrl: string): Promise<StallingProxy> {
  const target = new URL(serviceUrl);
  const defaults: Record<string, number> = { 'redis:': 6379, 'postgres:': 5432, 'postgresql:': 5432, 'amqp:': 5672 };
  const host = target.hostname || '127.0.0.1';
  const port = Number(target.port) || defaults[target.protocol] || 0;
  const sockets = new Set<Socket>();
  let stalled = false;
  const proxy = createServer((client) => {
    sockets.add(client);
    client.on('error', () => {});
    if (stalled) return; // accepted, never answered
    const server = connect(port, host);
    sockets.add(server);
    server.on('error', () => {});
    for (const [from, to] of [
      [client, server],
      [server, client],
    ] as const) {
      from.on('data', (chunk) => {
        if (!stalled) to.write(chunk);
      });
      from.on('close', () => to.destroy());
    }
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  const proxyPort = (proxy.address() as { port: number }).port;
  const url = new URL(serviceUrl);
  url.host = `127.0.0.1:${proxyPort}`;
  return {
    url: url.toString(),
    port: proxyPort,
    stall: () => {
      stalled = true;
    },
    async [Symbol.asyncDispose]() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    },
  };
}
