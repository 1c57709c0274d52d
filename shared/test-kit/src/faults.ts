/**
 * A service that stops answering, goes away, or sits far away, for fault tests: a TCP proxy in front of
 * a real Redis, PostgreSQL or RabbitMQ that the spec can stall, kill and delay. A closed port can only
 * play "refused"; this plays the other ways services fail:
 *
 * - stalled: connections stay open and new ones are accepted, but nothing passes either way; bytes
 *   wait in the proxy, as they would in the kernel buffers of a frozen server (SIGSTOP, a lock
 *   pile-up, a network path that drops packets), and flow again on resume();
 * - stranded: the connections open now go silent for good, with no reset, while new connections pass:
 *   a NAT or firewall that forgot them, a peer that vanished. Only a client that times out a silent
 *   connection and then throws it away (never hands it out again) recovers;
 * - killed: every connection is closed and new ones are refused, as with a server that crashed;
 *   revive() then listens on the same port again, as the server does once restarted;
 * - delayed ({@link delayingProxy}): every chunk waits a fixed time, plus a jitter drawn from a seeded
 *   generator, in each direction. Loopback answers in microseconds, which hides ordering bugs: an
 *   unawaited write usually lands before the read that follows it, a race between two connections is
 *   usually won by the one that started first. Behind a delay of tens of milliseconds the unawaited
 *   write is still on its way when the read happens, every time; with jitter, two connections' commands
 *   reach the server in an order that differs from the order they were sent.
 *
 * Bytes of one connection stay in order in each direction (a chunk is never released before the one
 * ahead of it), so the proxy never does what TCP cannot.
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
  /**
   * The connections open now pass nothing more, either way, for good (what they send is dropped, and
   * nothing closes them); new connections pass as before.
   */
  strand(): void;
  /** Closes every connection and refuses new ones. */
  kill(): Promise<void>;
  /**
   * After kill(): accepts connections on the same port again (clients keep the address they hold), and
   * passes what they send, as a restarted server answers: a stall from before the kill ends with it.
   */
  revive(): Promise<void>;
}

/** How a {@link delayingProxy} delays what passes; every figure in milliseconds, default 0. */
export interface DelayOptions {
  /** Added to every chunk in both directions (a round trip gains twice this). */
  delayMs?: number;
  /** Added to every chunk from the client to the service, instead of `delayMs`. */
  toServiceMs?: number;
  /** Added to every chunk from the service to the client, instead of `delayMs`. */
  toClientMs?: number;
  /** Each chunk's delay varies uniformly by up to ± this (never below 0). */
  jitterMs?: number;
  /** Seeds the jitter: the same seed draws the same sequence of delays. Default 1. */
  seed?: number;
}

/** A proxy that can also delay: a {@link StallingProxy} with a delay that can change mid-test. */
export interface DelayingProxy extends StallingProxy {
  /** Replaces the delay for chunks that arrive from now on (what is on its way keeps its time). */
  setDelay(options: DelayOptions): void;
  /** Chunks the proxy holds now (waiting out their delay, or a stall), per direction. */
  inFlight(): { toService: number; toClient: number };
  /** Resolves once the proxy holds nothing in either direction (after resume(), if stalled). */
  drained(): Promise<void>;
}

/** mulberry32: a tiny seeded generator of floats in [0, 1); plenty for spreading delays. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const DEFAULT_PORTS: Record<string, number> = { 'redis:': 6379, 'postgres:': 5432, 'postgresql:': 5432, 'amqp:': 5672 };

/**
 * Starts a proxy on 127.0.0.1 (a free port) in front of the service `serviceUrl` names.
 *
 * @example
 * await using proxy = await stallingProxy(redis.url);
 * const client = await opened.context.redis({ url: proxy.url, maxRetriesPerRequest: 1 });
 * proxy.stall(); // connected, then silent: the API must answer within its own bound
 * expect((await fetch(`${url}/limited`)).status).toBe(503);
 * proxy.resume();
 */
export async function stallingProxy(serviceUrl: string): Promise<StallingProxy> {
  return delayingProxy(serviceUrl, {});
}

/**
 * Starts a proxy on 127.0.0.1 (a free port) in front of the service `serviceUrl` names that delays
 * every chunk in each direction by `options` (a fixed time plus a seeded jitter); it also stalls,
 * kills and revives, as {@link stallingProxy}. Point the lab's client at `proxy.url` and check the
 * outcome with a client of the spec's own, straight to the service.
 *
 * @example
 * await using proxy = await delayingProxy(redisUrl, { delayMs: 50, jitterMs: 20, seed: 7 });
 * const app = await startLab(lab, { with: { redis: await context.redis({ url: proxy.url }) } });
 * await fetch(`${app.url}/profile`, { method: 'PUT', body }); // answered: so it must be stored
 * expect(proxy.inFlight().toService).toBe(0); // an unawaited write would still be on its way
 * expect(await direct.get(`${prefix}profile`)).toBe(body);
 */
export async function delayingProxy(serviceUrl: string, options: DelayOptions): Promise<DelayingProxy> {
  const target = new URL(serviceUrl);
  const host = target.hostname || '127.0.0.1';
  const targetPort = Number(target.port) || DEFAULT_PORTS[target.protocol] || 0;
  const sockets = new Set<Socket>();
  const held: (() => void)[] = [];
  /** Sockets of stranded connections: what arrives on them is dropped. */
  const stranded = new WeakSet<Socket>();
  let stalled = false;
  let delay = { ...options };
  let random = seededRandom(options.seed ?? 1);
  const inFlight = { toService: 0, toClient: 0 };
  const waiters: (() => void)[] = [];
  const settle = () => {
    if (inFlight.toService + inFlight.toClient > 0) return;
    for (const resolve of waiters.splice(0)) resolve();
  };
  /** This chunk's delay in one direction: the fixed part, plus or minus the jitter, never negative. */
  const delayFor = (direction: keyof typeof inFlight) => {
    const fixed = (direction === 'toService' ? delay.toServiceMs : delay.toClientMs) ?? delay.delayMs ?? 0;
    const jitter = delay.jitterMs ? (random() * 2 - 1) * delay.jitterMs : 0;
    return Math.max(0, fixed + jitter);
  };

  /**
   * Passes each chunk from `from` to `to` once its delay is over, or holds it while the proxy is
   * stalled. One queue per direction of a connection, released from its head by one timer: a chunk is
   * never due before the one ahead of it, and timers that round to the same millisecond cannot swap two.
   */
  const forward = (from: Socket, to: Socket, direction: keyof typeof inFlight) => {
    const queue: { due: number; chunk: Buffer }[] = [];
    let scheduled = false;
    const write = (chunk: Buffer) => () => {
      inFlight[direction]--;
      if (!to.destroyed) to.write(chunk);
      settle();
    };
    const drop = () => {
      inFlight[direction]--;
      settle();
    };
    const pass = (chunk: Buffer) => {
      if (stranded.has(from)) drop();
      else if (stalled) held.push(write(chunk));
      else write(chunk)();
    };
    const schedule = () => {
      if (scheduled || queue.length === 0) return;
      scheduled = true;
      setTimeout(release, Math.max(1, queue[0]!.due - performance.now()));
    };
    const release = () => {
      scheduled = false;
      while (queue.length > 0 && queue[0]!.due <= performance.now()) pass(queue.shift()!.chunk);
      schedule();
    };
    from.on('data', (chunk: Buffer) => {
      inFlight[direction]++;
      const wait = delayFor(direction);
      if (wait === 0 && queue.length === 0) return pass(chunk);
      const due = Math.max(performance.now() + wait, queue.at(-1)?.due ?? 0);
      queue.push({ due, chunk });
      schedule();
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
    forward(client, upstream, 'toService');
    forward(upstream, client, 'toClient');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const via = (other: string) => {
    const proxied = new URL(other);
    proxied.host = `127.0.0.1:${port}`;
    return proxied.toString();
  };
  const resume = () => {
    stalled = false;
    // Chunks held for a connection closed meanwhile are dropped.
    for (const write of held.splice(0)) write();
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
    // The restarted server answers: a stall set before the kill does not outlive it. What it held
    // belonged to connections the kill closed, so releasing it writes nothing (and empties inFlight).
    resume();
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
    resume,
    strand() {
      for (const socket of sockets) stranded.add(socket);
    },
    kill,
    revive,
    setDelay(next) {
      delay = { ...next };
      if (next.seed !== undefined) random = seededRandom(next.seed);
    },
    inFlight: () => ({ ...inFlight }),
    drained() {
      if (inFlight.toService + inFlight.toClient === 0) return Promise.resolve();
      return new Promise<void>((resolve) => waiters.push(resolve));
    },
    [Symbol.asyncDispose]: kill,
  };
}
