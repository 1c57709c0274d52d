/**
 * A TCP proxy in front of the real RabbitMQ, for the failures a test must cause on purpose:
 *
 * - stall(): from now on, what clients send is dropped (the broker hears nothing: no publishes, no
 *   acks), while what the broker sends still arrives. A network path that half-fails.
 * - cut(): every connection through the proxy is closed at once, as a broker restart or a network
 *   drop would; the broker sees its clients go, the clients see the broker go. Stalling ends, and new
 *   connections pass again, so a client that reconnects gets through.
 *
 * It reads just enough of AMQP 0-9-1's framing (type, channel, size, payload, end byte) to count the
 * basic.publish frames it drops, so a test can wait until the publishes it caused are really gone, and
 * the basic.publish and basic.ack frames it passes on: a worker that acks a job only once it is done
 * (or was done before), or once a copy of it is published (a retry, a dead letter), never sends more
 * acks than it has done jobs and published copies, so a test can see a job acked and gone the moment
 * the ack leaves, instead of waiting out a bound for a job that will never come back.
 */
import { connect, createServer, type Socket } from 'node:net';

export interface AmqpProxy extends AsyncDisposable {
  /** The broker's URL with the proxy's address. */
  readonly url: string;
  /** basic.publish frames dropped while stalled. */
  readonly droppedPublishes: number;
  /** basic.publish frames passed on to the broker. */
  readonly publishes: number;
  /** basic.ack frames passed on to the broker (an ack with `multiple` set counts once). */
  readonly acks: number;
  stall(): void;
  cut(): void;
}

const PROTOCOL_HEADER_BYTES = 8; // "AMQP" 0 0 9 1
const FRAME_METHOD = 1;
const BASIC_CLASS = 60;
const BASIC_PUBLISH = 40;
const BASIC_ACK = 80;

/** Counts the basic.publish and basic.ack frames in a client's byte stream, chunk by chunk. */
function frameCounter(): (chunk: Buffer) => { publishes: number; acks: number } {
  let pending = Buffer.alloc(0);
  let headerSeen = false;
  return (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    if (!headerSeen) {
      if (pending.length < PROTOCOL_HEADER_BYTES) return { publishes: 0, acks: 0 };
      pending = pending.subarray(PROTOCOL_HEADER_BYTES);
      headerSeen = true;
    }
    let publishes = 0;
    let acks = 0;
    // A frame: type (1 byte), channel (2), payload size (4), payload, frame-end (1).
    while (pending.length >= 7) {
      const size = pending.readUInt32BE(3);
      if (pending.length < 7 + size + 1) break;
      if (pending[0] === FRAME_METHOD && size >= 4) {
        if (pending.readUInt16BE(7) === BASIC_CLASS && pending.readUInt16BE(9) === BASIC_PUBLISH) publishes++;
        if (pending.readUInt16BE(7) === BASIC_CLASS && pending.readUInt16BE(9) === BASIC_ACK) acks++;
      }
      pending = pending.subarray(7 + size + 1);
    }
    return { publishes, acks };
  };
}

/** Starts a proxy to the broker at `brokerUrl` on a free loopback port. */
export async function amqpProxy(brokerUrl: string): Promise<AmqpProxy> {
  const broker = new URL(brokerUrl);
  const sockets = new Set<Socket>();
  let stalled = false;
  let droppedPublishes = 0;
  let publishes = 0;
  let acks = 0;
  let closed = false;
  const server = createServer((client) => {
    if (closed) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(broker.port || 5672), broker.hostname);
    const countFrames = frameCounter();
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (chunk: Buffer) => {
      const counted = countFrames(chunk);
      if (stalled) droppedPublishes += counted.publishes;
      else {
        publishes += counted.publishes;
        acks += counted.acks;
        upstream.write(chunk);
      }
    });
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxied = new URL(brokerUrl);
  proxied.host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    url: proxied.toString(),
    get droppedPublishes() {
      return droppedPublishes;
    },
    get publishes() {
      return publishes;
    },
    get acks() {
      return acks;
    },
    stall() {
      stalled = true;
    },
    cut() {
      for (const socket of sockets) socket.destroy();
      stalled = false;
    },
    async [Symbol.asyncDispose]() {
      // Stop accepting first: a client that reconnects at once must not slip in after the sockets go.
      closed = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await stopped;
    },
  };
}
