/**
 * A TCP proxy on 127.0.0.1 that puts a service at a distance: every chunk in each direction is held for
 * the set latency (plus optional jitter) before it is passed on, in the manner of Shopify's toxiproxy
 * latency toxic. On loopback a database round trip costs tens of microseconds; in production it costs a
 * network hop, and a design that makes many round trips (N+1 queries, a cache miss path) only shows its
 * cost when each hop costs what it would.
 *
 * Bytes stay in order: each direction of a connection is one queue, each chunk released at its due time,
 * and a chunk is never due before the one ahead of it (so jitter varies the gaps, never the order).
 * A chunk waits at least the latency, and more where Node's whole-millisecond timers or a busy CPU run
 * late (an idle 1 ms proxy holds about 1.2 ms); so the proxy measures what it applied (stats()) and what
 * it costs by itself (measureProxyOverhead()), and a bench prints both beside the stated distance.
 */
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { type ServiceAddress, serviceAddress } from '@labs/services';

export { type ServiceAddress, serviceAddress };

/** How to start a {@link LatencyProxy}. */
export interface LatencyProxyOptions {
  /** The service behind the proxy. */
  target: ServiceAddress;
  /** Milliseconds added to each direction: a request-response round trip gains twice this. */
  latencyMs: number;
  /** Each chunk's delay varies uniformly by up to ± this many milliseconds (never below 0). Default 0. */
  jitterMs?: number;
  /** Client connections open at once; a connection beyond this is closed at once. Default 1000. */
  maxConnections?: number;
  /** Port on 127.0.0.1; default 0 (any free port). */
  port?: number;
  /** How long connecting to the service may take before the client is closed. Default 5000 ms. */
  connectTimeoutMs?: number;
}

/** What one direction of the proxy has passed on so far. */
export interface DirectionStats {
  chunks: number;
  bytes: number;
  /** Mean time a chunk was held, in milliseconds (0 when no chunk has passed). */
  meanDelayMs: number;
}

/** What the proxy has done since it started. */
export interface LatencyProxyStats {
  /** Client connections accepted in total. */
  accepted: number;
  /** Client connections closed at once because `maxConnections` were open. */
  refused: number;
  /** Client connections open now. */
  open: number;
  /** Client to service. */
  upstream: DirectionStats;
  /** Service to client. */
  downstream: DirectionStats;
}

/** A running proxy. Closing it (or leaving its `await using` block) closes every socket it holds. */
export interface LatencyProxy extends AsyncDisposable {
  readonly host: string;
  readonly port: number;
  readonly target: ServiceAddress;
  readonly latencyMs: number;
  readonly jitterMs: number;
  stats(): LatencyProxyStats;
  close(): Promise<void>;
}

/** Bytes held per direction before the sending side is paused: bounded memory under any load. */
const HIGH_WATER_BYTES = 1 << 20;

/** Accumulates what one direction passed on. */
function directionCounter() {
  let chunks = 0;
  let bytes = 0;
  let delaySum = 0;
  return {
    record(size: number, delayMs: number) {
      chunks++;
      bytes += size;
      delaySum += delayMs;
    },
    snapshot: (): DirectionStats => ({ chunks, bytes, meanDelayMs: chunks === 0 ? 0 : delaySum / chunks }),
  };
}

/**
 * Queues holding chunks, checked once more in every event-loop turn that received data. A timer alone
 * fires on the next whole millisecond, or later on a busy machine; under load, turns with data come far
 * more often, so a chunk leaves close to its due time. An idle proxy is left to its timers (no spinning).
 */
const holding = new Set<() => void>();
let sweepScheduled = false;
function sweepSoon(): void {
  if (sweepScheduled) return;
  sweepScheduled = true;
  setImmediate(() => {
    sweepScheduled = false;
    for (const releaseDue of holding) releaseDue();
  });
}

/**
 * Passes what `from` sends on to `to`, each chunk (and the final FIN) held until its due time. Pauses
 * `from` while more than HIGH_WATER_BYTES wait, here or in `to`'s buffer. Returns a function that
 * drops the queue and its timer.
 */
function delayedPipe(
  from: Socket,
  to: Socket,
  delayMs: () => number,
  record: (size: number, delayMs: number) => void,
): () => void {
  const queue: { chunk: Buffer | null; arrivedAt: number; dueAt: number }[] = [];
  let queuedBytes = 0;
  let lastDueAt = 0;
  let timer: NodeJS.Timeout | undefined;

  const updateFlow = () => {
    const held = queuedBytes + to.writableLength;
    if (held > HIGH_WATER_BYTES && !from.isPaused()) from.pause();
    else if (held <= HIGH_WATER_BYTES / 2 && from.isPaused()) from.resume();
  };
  const release = () => {
    clearTimeout(timer);
    timer = undefined;
    const now = performance.now();
    while (queue.length > 0 && queue[0]!.dueAt <= now) {
      const { chunk, arrivedAt } = queue.shift()!;
      if (to.destroyed) {
        drop();
        return;
      }
      if (chunk === null) {
        to.end();
        continue;
      }
      queuedBytes -= chunk.length;
      record(chunk.length, now - arrivedAt);
      to.write(chunk);
    }
    // Node's timers count whole milliseconds and may fire a fraction early: check again, never release early.
    if (queue.length > 0) {
      timer = setTimeout(release, Math.max(1, Math.ceil(queue[0]!.dueAt - now)));
      holding.add(releaseDue);
    } else holding.delete(releaseDue);
    updateFlow();
  };
  const releaseDue = () => {
    if (queue.length > 0 && queue[0]!.dueAt <= performance.now()) release();
  };
  const drop = () => {
    clearTimeout(timer);
    timer = undefined;
    queue.length = 0;
    holding.delete(releaseDue);
  };
  const enqueue = (chunk: Buffer | null) => {
    const arrivedAt = performance.now();
    // Never due before the chunk ahead: jitter changes gaps, not order.
    const dueAt = Math.max(arrivedAt + delayMs(), lastDueAt);
    lastDueAt = dueAt;
    queue.push({ chunk, arrivedAt, dueAt });
    if (chunk) queuedBytes += chunk.length;
    if (timer === undefined) {
      if (dueAt <= arrivedAt) release();
      else {
        timer = setTimeout(release, Math.max(1, Math.ceil(dueAt - arrivedAt)));
        holding.add(releaseDue);
      }
    }
    updateFlow();
    sweepSoon();
  };
  from.on('data', (chunk: Buffer) => enqueue(chunk));
  from.on('end', () => enqueue(null));
  to.on('drain', updateFlow);
  return drop;
}

/** Starts a proxy on 127.0.0.1 in front of `options.target`; resolves once it listens. */
export async function startLatencyProxy(options: LatencyProxyOptions): Promise<LatencyProxy> {
  const { target, latencyMs, jitterMs = 0, maxConnections = 1000, connectTimeoutMs = 5000 } = options;
  if (!(latencyMs >= 0) || !(jitterMs >= 0)) {
    throw new RangeError(`latency and jitter must be 0 or more milliseconds, got ${latencyMs} and ${jitterMs}`);
  }
  const delayMs = () => Math.max(0, latencyMs + (jitterMs === 0 ? 0 : (Math.random() * 2 - 1) * jitterMs));
  const upstream = directionCounter();
  const downstream = directionCounter();
  const sockets = new Set<Socket>();
  const cleanups = new Set<() => void>();
  let accepted = 0;
  let refused = 0;
  let open = 0;

  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };

  // allowHalfOpen: a client's FIN travels to the service with the same delay as its data, and the
  // service may still answer after it (as after Redis' QUIT).
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    accepted++;
    open++;
    track(client);
    const service = connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
    track(service);
    service.setTimeout(connectTimeoutMs, () => service.destroy(new Error('connect timeout')));
    service.once('connect', () => service.setTimeout(0));
    const stopUp = delayedPipe(client, service, delayMs, upstream.record);
    const stopDown = delayedPipe(service, client, delayMs, downstream.record);
    const cleanup = () => {
      stopUp();
      stopDown();
    };
    cleanups.add(cleanup);
    // A reset or an unreachable service on either side ends both: the client sees its connection close
    // instead of waiting for an answer that cannot come.
    const abort = () => {
      cleanup();
      client.destroy();
      service.destroy();
    };
    client.on('error', abort);
    service.on('error', abort);
    client.once('close', (hadError) => {
      open--;
      if (hadError) abort();
    });
    service.once('close', (hadError) => {
      if (hadError) abort();
    });
    let closed = 0;
    const bothClosed = () => {
      if (++closed === 2) cleanups.delete(cleanup);
    };
    client.once('close', bothClosed);
    service.once('close', bothClosed);
  });
  server.maxConnections = maxConnections;
  server.on('drop', () => refused++);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const cleanup of cleanups) cleanup();
      cleanups.clear();
      for (const socket of sockets) socket.destroy();
    }));
  return {
    host: '127.0.0.1',
    port,
    target,
    latencyMs,
    jitterMs,
    stats: () => ({ accepted, refused, open, upstream: upstream.snapshot(), downstream: downstream.snapshot() }),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** A proxy's own cost: round trips through it with no added latency, against the same trips direct. */
export interface ProxyOverhead {
  roundTrips: number;
  /** Median round trip straight to an echo server, in microseconds. */
  directUs: number;
  /** Median round trip through a 0 ms proxy to the same server, in microseconds. */
  proxiedUs: number;
  /** proxiedUs - directUs: what the proxy itself adds to each round trip. */
  overheadUs: number;
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
};

/** Sends `count` small messages one after another to an echo at `port`; returns each round trip in µs. */
async function echoRoundTrips(port: number, count: number): Promise<number[]> {
  const socket = connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const message = Buffer.from('PING\r\n');
  const times: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await new Promise<void>((resolve, reject) => {
        let received = 0;
        const onData = (chunk: Buffer) => {
          received += chunk.length;
          if (received < message.length) return;
          socket.off('data', onData);
          socket.off('error', reject);
          resolve();
        };
        socket.on('data', onData);
        socket.once('error', reject);
        socket.write(message);
      });
      times.push((performance.now() - started) * 1000);
    }
  } finally {
    socket.destroy();
  }
  return times;
}

/**
 * Measures what the proxy itself costs: `roundTrips` small round trips (after a warm-up) to an echo
 * server in this process, straight and through a proxy that adds 0 ms, and compares the medians.
 */
export async function measureProxyOverhead(roundTrips = 500): Promise<ProxyOverhead> {
  const echo = createServer((socket) => {
    socket.setNoDelay(true);
    socket.on('error', () => socket.destroy());
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  const echoPort = (echo.address() as AddressInfo).port;
  try {
    await using proxy = await startLatencyProxy({ target: { host: '127.0.0.1', port: echoPort }, latencyMs: 0 });
    const warmUp = Math.min(100, roundTrips);
    await echoRoundTrips(echoPort, warmUp);
    await echoRoundTrips(proxy.port, warmUp);
    const directUs = median(await echoRoundTrips(echoPort, roundTrips));
    const proxiedUs = median(await echoRoundTrips(proxy.port, roundTrips));
    return { roundTrips, directUs, proxiedUs, overheadUs: proxiedUs - directUs };
  } finally {
    echo.close();
  }
}

/** One line for a bench's output: "proxy overhead: 41 µs per round trip (...)". */
export function describeOverhead(overhead: ProxyOverhead): string {
  const us = (n: number) => `${Math.round(n)} µs`;
  return `proxy overhead: ${us(Math.max(0, overhead.overheadUs))} per round trip (median of ${overhead.roundTrips}: ${us(overhead.proxiedUs)} through a 0 ms proxy, ${us(overhead.directUs)} direct)`;
}

/** `url` with its host and port replaced by the proxy's; credentials, database, vhost and query kept. */
export function proxiedUrl(url: string, proxy: { host: string; port: number }): string {
  serviceAddress(url); // the same checks: a URL the proxy cannot stand in front of is an error here
  const parsed = new URL(url);
  parsed.hostname = proxy.host;
  parsed.port = String(proxy.port);
  return parsed.toString();
}
