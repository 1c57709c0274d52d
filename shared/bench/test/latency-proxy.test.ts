import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { measureProxyOverhead, proxiedUrl, serviceAddress, startLatencyProxy } from '../src/latency-proxy.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A TCP server on a free loopback port, closed after the test (its open sockets too). */
async function serve(
  onConnection: (socket: Socket) => void,
  allowHalfOpen = false,
): Promise<{ server: Server; port: number }> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    onConnection(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return { server, port: (server.address() as AddressInfo).port };
}

const echoServer = () => serve((socket) => socket.pipe(socket));

async function open(port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port, noDelay: true });
  cleanups.push(() => void socket.destroy());
  await once(socket, 'connect');
  return socket;
}

/** Everything `socket` receives until it ends (or closes). */
function collect(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  return new Promise((resolve) => socket.once('close', () => resolve(Buffer.concat(chunks))));
}

/** Resolves once `socket` has received `length` bytes, with them. */
function receive(socket: Socket, length: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let received = 0;
  return new Promise((resolve) => {
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received >= length) {
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
  });
}

/** `count` distinct, numbered chunks of varied sizes: any loss, duplicate or swap shows in the bytes. */
const numberedChunks = (count: number, seed: number) =>
  Array.from({ length: count }, (_, i) => Buffer.from(`<${seed}:${i}:${'x'.repeat((i * 37) % 200)}>`));

/** Writes each chunk in its own event-loop turn, so the proxy meets them as separate chunks. */
async function writeApart(socket: Socket, chunks: Buffer[]): Promise<void> {
  for (const chunk of chunks) {
    socket.write(chunk);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('latency proxy', () => {
  it('delivers every byte in order in both directions under jitter', async () => {
    const echo = await echoServer();
    const proxy = await startLatencyProxy({
      target: { host: '127.0.0.1', port: echo.port },
      latencyMs: 2,
      jitterMs: 2,
    });
    cleanups.push(() => proxy.close());
    const client = await open(proxy.port);
    const chunks = numberedChunks(300, 1);
    const expected = Buffer.concat(chunks);
    const echoed = receive(client, expected.length);
    await writeApart(client, chunks);
    expect((await echoed).equals(expected)).toBe(true);
    // Many chunks really did pass one by one, each through the delay queue.
    expect(proxy.stats().upstream.chunks).toBeGreaterThan(100);
    expect(proxy.stats().upstream.bytes).toBe(expected.length);
  });

  it('carries a half-close: the service reads to the end, then answers, and the client reads the answer', async () => {
    const service = await serve((socket) => {
      let received = 0;
      socket.on('data', (chunk: Buffer) => {
        received += chunk.length;
      });
      socket.once('end', () => socket.end(`got ${received} bytes`));
    }, true);
    const proxy = await startLatencyProxy({ target: { host: '127.0.0.1', port: service.port }, latencyMs: 1 });
    cleanups.push(() => proxy.close());
    const client = await open(proxy.port);
    const answer = collect(client);
    client.end('hello, then FIN');
    expect((await answer).toString()).toBe('got 15 bytes');
  });

  it('serves many connections at once, each one intact', async () => {
    const echo = await echoServer();
    const proxy = await startLatencyProxy({
      target: { host: '127.0.0.1', port: echo.port },
      latencyMs: 1,
      jitterMs: 1,
    });
    cleanups.push(() => proxy.close());
    const results = await Promise.all(
      Array.from({ length: 60 }, async (_, n) => {
        const client = await open(proxy.port);
        const chunks = numberedChunks(20, n);
        const expected = Buffer.concat(chunks);
        const echoed = receive(client, expected.length);
        await writeApart(client, chunks);
        const ok = (await echoed).equals(expected);
        client.end();
        return ok;
      }),
    );
    expect(results.filter(Boolean)).toHaveLength(60);
    expect(proxy.stats().accepted).toBe(60);
  });

  it('closes every client and service socket when disposed, and stops listening', async () => {
    let serviceSockets = 0;
    const service = await serve((socket) => {
      serviceSockets++;
      socket.once('close', () => serviceSockets--);
    });
    let port = 0;
    const clients: Socket[] = [];
    {
      await using proxy = await startLatencyProxy({ target: { host: '127.0.0.1', port: service.port }, latencyMs: 1 });
      port = proxy.port;
      for (let i = 0; i < 5; i++) clients.push(await open(proxy.port));
      await expect.poll(() => serviceSockets).toBe(5);
      expect(proxy.stats().open).toBe(5);
    }
    await Promise.all(clients.map((c) => (c.closed ? undefined : once(c, 'close'))));
    await expect.poll(() => serviceSockets).toBe(0);
    const refused = connect({ host: '127.0.0.1', port });
    const [error] = (await once(refused, 'error')) as [NodeJS.ErrnoException];
    expect(error.code).toBe('ECONNREFUSED');
  });

  it('closes the client at once when the service is down, instead of leaving it hanging', async () => {
    const gone = await serve(() => {});
    const port = gone.port;
    await new Promise((resolve) => gone.server.close(resolve));
    const proxy = await startLatencyProxy({ target: { host: '127.0.0.1', port }, latencyMs: 1 });
    cleanups.push(() => proxy.close());
    const client = await open(proxy.port);
    client.on('error', () => {}); // a reset is as good as a FIN here: the client is told
    client.write('PING\r\n');
    await once(client, 'close');
    await expect.poll(() => proxy.stats().open).toBe(0);
  });

  it('refuses connections beyond maxConnections and counts them', async () => {
    const service = await serve(() => {});
    const proxy = await startLatencyProxy({
      target: { host: '127.0.0.1', port: service.port },
      latencyMs: 0,
      maxConnections: 3,
    });
    cleanups.push(() => proxy.close());
    let closed = 0;
    for (let i = 0; i < 5; i++) {
      const client = await open(proxy.port);
      client.on('error', () => {});
      client.once('close', () => closed++);
    }
    await expect.poll(() => proxy.stats().refused).toBe(2);
    expect(proxy.stats().accepted).toBe(3);
    await expect.poll(() => closed).toBe(2);
  });

  it('really applies the latency: 20 round trips at 5 ms each way take at least 200 ms', async () => {
    const echo = await echoServer();
    const proxy = await startLatencyProxy({ target: { host: '127.0.0.1', port: echo.port }, latencyMs: 5 });
    cleanups.push(() => proxy.close());
    const client = await open(proxy.port);
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      const answer = receive(client, 5);
      client.write(`p${String(i).padStart(3, '0')}\n`);
      await answer;
    }
    // A lower bound only: how much longer a busy machine takes is not the proxy's doing.
    expect(performance.now() - started).toBeGreaterThanOrEqual(20 * 2 * 5);
    expect(proxy.stats().downstream.meanDelayMs).toBeGreaterThanOrEqual(5);
  });

  it('measures its own cost against a direct round trip', async () => {
    const overhead = await measureProxyOverhead(50);
    expect(overhead.roundTrips).toBe(50);
    expect(overhead.directUs).toBeGreaterThan(0);
    expect(overhead.proxiedUs).toBeGreaterThan(0);
    expect(overhead.overheadUs).toBe(overhead.proxiedUs - overhead.directUs);
  });
});

describe('service URLs through the proxy', () => {
  const proxy = { host: '127.0.0.1', port: 40123 };

  it('keeps credentials, database and query, and replaces only host and port', () => {
    expect(proxiedUrl('redis://:secret@10.0.0.5:6380/2', proxy)).toBe('redis://:secret@127.0.0.1:40123/2');
    expect(proxiedUrl('postgres://app:pw@db.internal:5432/labs_x?sslmode=disable', proxy)).toBe(
      'postgres://app:pw@127.0.0.1:40123/labs_x?sslmode=disable',
    );
    expect(proxiedUrl('amqp://guest:guest@127.0.0.1:5672', proxy)).toBe('amqp://guest:guest@127.0.0.1:40123');
  });

  it("finds the service's address, with each scheme's default port", () => {
    expect(serviceAddress('redis://localhost')).toEqual({ host: 'localhost', port: 6379 });
    expect(serviceAddress('postgresql://u@[::1]/db')).toEqual({ host: '::1', port: 5432 });
    expect(serviceAddress('amqp://mq.internal')).toEqual({ host: 'mq.internal', port: 5672 });
  });

  it('refuses what it cannot stand in front of', () => {
    expect(() => proxiedUrl('http://127.0.0.1:8080', proxy)).toThrow(/cannot proxy http:/);
    expect(() => proxiedUrl('127.0.0.1:9092', proxy)).toThrow(/not a service URL/);
    expect(() => proxiedUrl('postgres:///db?host=/var/run/postgresql', proxy)).toThrow(/Unix socket/);
  });
});
