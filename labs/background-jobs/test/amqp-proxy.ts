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
 * And it reads each passed-on message's delivery mode: a message not marked persistent is dropped by a
 * broker restart even from a durable queue, and a retry copy or a dead letter is the job's only copy.
 *
 * It also keeps the broker's side of every consumer's books, per connection and channel, as the broker
 * keeps them: each basic.deliver (its delivery tag and the message's id), each ack, nack or reject the
 * client sends, and each channel the broker closes. So a test can count how often each job was
 * delivered, and see a settlement that names a delivery its channel does not hold: settled already,
 * never made, or made on another channel (a tag is only a number, counted afresh on every channel).
 * The broker answers such a settlement by closing the channel (PRECONDITION_FAILED, unknown delivery
 * tag), which the books record too.
 *
 * And it can make the broker close a client's channels while their connection lives on, as it does for
 * a channel error: closeChannels() sends on each, as if from the client, an ack of a delivery tag the
 * channel never had, which the broker answers by closing that channel (PRECONDITION_FAILED).
 *
 * And it can stop reading: after pauseReading() it reads nothing its clients send until
 * resumeReading(), as a broker under a memory or disk alarm stops reading from publishing connections.
 * Unlike stall(), nothing is lost: what a client writes fills the kernel's buffers between it and the
 * proxy, then backs up into the client's own process, and all of it passes on, in order, once reading
 * resumes.
 */
import { connect, createServer, type Socket } from 'node:net';

export interface AmqpProxy extends AsyncDisposable {
  /** The broker's URL with the proxy's address. */
  readonly url: string;
  /** basic.publish frames dropped while stalled. */
  readonly droppedPublishes: number;
  /** basic.publish frames passed on to the broker. */
  readonly publishes: number;
  /**
   * Messages passed on to the broker that were not marked persistent (delivery mode 2), each by its
   * message id: a broker restart drops them, even from a durable queue.
   */
  readonly transientPublishes: readonly string[];
  /** basic.ack frames passed on to the broker (an ack with `multiple` set counts once). */
  readonly acks: number;
  /** basic.deliver frames the broker sent for the message with this id, over every connection. */
  deliveriesOf(messageId: string): number;
  /** Settlements that named no delivery their channel held unsettled (see ledger()). */
  readonly strayedSettlements: readonly string[];
  /** The channels the broker closed, each as "<code> <text>" (a client's own close is not counted). */
  readonly channelsClosedByBroker: readonly string[];
  /** The heartbeat interval (s) each connection settled on with the broker (connection.tune-ok), in order. */
  readonly heartbeats: readonly number[];
  stall(): void;
  cut(): void;
  /** Reads nothing from the clients, new ones included, until resumeReading(); the broker's side flows. */
  pauseReading(): void;
  resumeReading(): void;
  /**
   * The broker closes every channel the clients have open (PRECONDITION_FAILED, unknown delivery tag),
   * their connections untouched: a channel error, as a client's own mistake or an operator's action
   * would cause. The books count the closes (channelsClosedByBroker), not the acks that caused them.
   */
  closeChannels(): void;
}

const PROTOCOL_HEADER_BYTES = 8; // "AMQP" 0 0 9 1
const FRAME_METHOD = 1;
const FRAME_HEADER = 2;
const CONNECTION_CLASS = 10;
const CONNECTION_TUNE_OK = 31;
const CHANNEL_CLASS = 20;
const CHANNEL_OPEN = 10;
const CHANNEL_CLOSE = 40;
const FRAME_END = 0xce;
/** A delivery tag no channel of a test ever reaches. */
const UNKNOWN_DELIVERY_TAG = 999_999_999n;
const BASIC_CLASS = 60;
const BASIC_PUBLISH = 40;
const BASIC_DELIVER = 60;
const BASIC_ACK = 80;
const BASIC_REJECT = 90;
const BASIC_NACK = 120;
/** The message-id property's bit in a content header's property flags (AMQP 0-9-1, 4.2.6.1). */
const MESSAGE_ID_FLAG = 1 << 7;

/** One frame: its type, channel and payload. */
interface Frame {
  type: number;
  channel: number;
  payload: Buffer;
}

/**
 * Splits a byte stream into frames, chunk by chunk (`skip`: bytes before the first frame); `aligned()`
 * says whether the bytes read so far end on a frame's end, where a frame of our own may be slipped in.
 */
function frameReader(skip: number): ((chunk: Buffer) => Frame[]) & { aligned(): boolean } {
  let pending = Buffer.alloc(0);
  let skipped = skip === 0;
  const read = (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    if (!skipped) {
      if (pending.length < skip) return [];
      pending = pending.subarray(skip);
      skipped = true;
    }
    const frames: Frame[] = [];
    // A frame: type (1 byte), channel (2), payload size (4), payload, frame-end (1).
    while (pending.length >= 7) {
      const size = pending.readUInt32BE(3);
      if (pending.length < 7 + size + 1) break;
      frames.push({ type: pending[0]!, channel: pending.readUInt16BE(1), payload: pending.subarray(7, 7 + size) });
      pending = pending.subarray(7 + size + 1);
    }
    return frames;
  };
  return Object.assign(read, { aligned: () => skipped && pending.length === 0 });
}

/** basic.ack of `tag` on `channel`, not `multiple`: delivery-tag (8 bytes), then a byte of bits. */
function ackFrame(channel: number, tag: bigint): Buffer {
  const payload = Buffer.alloc(4 + 8 + 1);
  payload.writeUInt16BE(BASIC_CLASS, 0);
  payload.writeUInt16BE(BASIC_ACK, 2);
  payload.writeBigUInt64BE(tag, 4);
  const frame = Buffer.alloc(7 + payload.length + 1);
  frame[0] = FRAME_METHOD;
  frame.writeUInt16BE(channel, 1);
  frame.writeUInt32BE(payload.length, 3);
  payload.copy(frame, 7);
  frame[frame.length - 1] = FRAME_END;
  return frame;
}

/** A method frame's class and method ids, or undefined for any other frame. */
const methodOf = (frame: Frame) =>
  frame.type === FRAME_METHOD && frame.payload.length >= 4
    ? { classId: frame.payload.readUInt16BE(0), methodId: frame.payload.readUInt16BE(2) }
    : undefined;

/** The properties of a content header frame a test reads: the delivery mode and the message id. */
function propertiesOf(payload: Buffer): { deliveryMode?: number; messageId?: string } {
  // class (2), weight (2), body size (8), property flags (2), then each property that is present, in
  // order: content-type, content-encoding (short strings), headers (a table with a 4-byte length),
  // delivery-mode, priority (an octet each), correlation-id, reply-to, expiration, message-id.
  const flags = payload.readUInt16BE(12);
  let at = 14;
  const shortString = () => {
    const length = payload[at]!;
    at += 1 + length;
    return payload.toString('utf8', at - length, at);
  };
  if (flags & (1 << 15)) shortString();
  if (flags & (1 << 14)) shortString();
  if (flags & (1 << 13)) at += 4 + payload.readUInt32BE(at);
  const deliveryMode = flags & (1 << 12) ? payload[at++] : undefined;
  if (flags & (1 << 11)) at += 1;
  for (const bit of [10, 9, 8]) if (flags & (1 << bit)) shortString();
  return { deliveryMode, messageId: flags & MESSAGE_ID_FLAG ? shortString() : undefined };
}

/** One connection's books (see ledger()). */
interface Ledger {
  /** A frame the broker sent. */
  fromBroker(frame: Frame): void;
  /** A frame the client sent (and the broker received). */
  fromClient(frame: Frame): void;
}

/**
 * One connection's deliveries, as the broker keeps them: per channel, the tags it has delivered and
 * not yet had settled. A settlement with `multiple` settles every unsettled tag up to its own (all of
 * them for tag 0); one that settles nothing named a delivery the channel does not hold. What it sees
 * goes into the proxy's counts: deliveries per message id, settlements that strayed, channels closed.
 */
function ledger(deliveries: Map<string, number>, strayed: string[], closedByBroker: string[]): Ledger {
  const open = new Map<number, Set<number>>();
  /** Per channel, the tag of a basic.deliver whose content header has not arrived yet. */
  const awaitingHeader = new Map<number, number>();
  const tagsOf = (channel: number) => {
    const tags = open.get(channel) ?? new Set<number>();
    open.set(channel, tags);
    return tags;
  };
  const kinds: Record<number, string> = { [BASIC_ACK]: 'ack', [BASIC_NACK]: 'nack', [BASIC_REJECT]: 'reject' };
  return {
    fromBroker(frame) {
      const method = methodOf(frame);
      if (method?.classId === BASIC_CLASS && method.methodId === BASIC_DELIVER) {
        // consumer-tag (a short string), then the delivery tag.
        awaitingHeader.set(frame.channel, Number(frame.payload.readBigUInt64BE(4 + 1 + frame.payload[4]!)));
      } else if (frame.type === FRAME_HEADER && awaitingHeader.has(frame.channel)) {
        const tag = awaitingHeader.get(frame.channel)!;
        awaitingHeader.delete(frame.channel);
        const id = propertiesOf(frame.payload).messageId ?? '(no message id)';
        deliveries.set(id, (deliveries.get(id) ?? 0) + 1);
        tagsOf(frame.channel).add(tag);
      } else if (method?.classId === CHANNEL_CLASS && method.methodId === CHANNEL_CLOSE) {
        // reply-code (2), reply-text (a short string). The broker requeues what the channel held.
        const code = frame.payload.readUInt16BE(4);
        closedByBroker.push(`${code} ${frame.payload.toString('utf8', 7, 7 + frame.payload[6]!)}`);
        open.delete(frame.channel);
      }
    },
    fromClient(frame) {
      const method = methodOf(frame);
      if (method?.classId === CHANNEL_CLASS && method.methodId === CHANNEL_OPEN) {
        open.set(frame.channel, new Set()); // a channel number used again counts its tags afresh
        return;
      }
      const kind = method?.classId === BASIC_CLASS ? kinds[method.methodId] : undefined;
      if (kind === undefined) return;
      // delivery-tag (8 bytes), then a byte of bits: `multiple` first (basic.reject has none).
      const tag = Number(frame.payload.readBigUInt64BE(4));
      const multiple = kind !== 'reject' && (frame.payload[12]! & 1) === 1;
      const tags = tagsOf(frame.channel);
      let settled = 0;
      for (const held of [...tags]) {
        if (held === tag || (multiple && (tag === 0 || held < tag))) {
          tags.delete(held);
          settled++;
        }
      }
      if (settled === 0) {
        strayed.push(`${kind} of delivery tag ${tag}${multiple ? ' (multiple)' : ''} on channel ${frame.channel}`);
      }
    },
  };
}

/** Starts a proxy to the broker at `brokerUrl` on a free loopback port. */
export async function amqpProxy(brokerUrl: string): Promise<AmqpProxy> {
  const broker = new URL(brokerUrl);
  const sockets = new Set<Socket>();
  let stalled = false;
  let reading = true;
  /** The clients' sockets, which pauseReading() and resumeReading() pause and resume. */
  const clients = new Set<Socket>();
  let droppedPublishes = 0;
  let publishes = 0;
  let acks = 0;
  let closed = false;
  const deliveries = new Map<string, number>();
  const strayed: string[] = [];
  const closedByBroker: string[] = [];
  const heartbeats: number[] = [];
  const transient: string[] = [];
  /** Per connection: makes the broker close the channels its client has open (see closeChannels()). */
  const channelClosers = new Set<() => void>();
  const server = createServer((client) => {
    if (closed) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(broker.port || 5672), broker.hostname);
    clients.add(client);
    client.on('close', () => clients.delete(client));
    if (!reading) client.pause();
    const clientFrames = frameReader(PROTOCOL_HEADER_BYTES);
    const brokerFrames = frameReader(0);
    const books = ledger(deliveries, strayed, closedByBroker);
    /** Channels whose last frame from the client was a basic.publish: its content header comes next. */
    const publishing = new Set<number>();
    /** Channels the client has opened and neither side has closed since. */
    const openChannels = new Set<number>();
    /** A closeChannels() waiting for the client's bytes to reach a frame's end. */
    let closePending = false;
    const closeOpenChannels = () => {
      closePending = !clientFrames.aligned();
      if (closePending) return;
      for (const channel of openChannels) upstream.write(ackFrame(channel, UNKNOWN_DELIVERY_TAG));
    };
    channelClosers.add(closeOpenChannels);
    const isChannelClose = (frame: Frame) => {
      const method = methodOf(frame);
      return method?.classId === CHANNEL_CLASS && method.methodId === CHANNEL_CLOSE;
    };
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        sockets.delete(socket);
        channelClosers.delete(closeOpenChannels);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (chunk: Buffer) => {
      const frames = clientFrames(chunk);
      const isBasic = (frame: Frame, methodId: number) => {
        const method = methodOf(frame);
        return method?.classId === BASIC_CLASS && method.methodId === methodId;
      };
      const published = frames.filter((frame) => isBasic(frame, BASIC_PUBLISH)).length;
      if (stalled) droppedPublishes += published;
      else {
        publishes += published;
        acks += frames.filter((frame) => isBasic(frame, BASIC_ACK)).length;
        for (const frame of frames) {
          books.fromClient(frame);
          if (isBasic(frame, BASIC_PUBLISH)) publishing.add(frame.channel);
          else if (frame.type === FRAME_HEADER && publishing.delete(frame.channel)) {
            const { deliveryMode, messageId = '(no message id)' } = propertiesOf(frame.payload);
            if (deliveryMode !== 2) transient.push(messageId);
          }
          const method = methodOf(frame);
          // channel-max (2 bytes), frame-max (4), heartbeat (2): what the client accepted.
          if (method?.classId === CONNECTION_CLASS && method.methodId === CONNECTION_TUNE_OK) {
            heartbeats.push(frame.payload.readUInt16BE(10));
          }
          if (method?.classId === CHANNEL_CLASS && method.methodId === CHANNEL_OPEN) openChannels.add(frame.channel);
          else if (isChannelClose(frame)) openChannels.delete(frame.channel);
        }
        upstream.write(chunk);
        if (closePending) closeOpenChannels();
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      for (const frame of brokerFrames(chunk)) {
        books.fromBroker(frame);
        if (isChannelClose(frame)) openChannels.delete(frame.channel);
      }
      client.write(chunk);
    });
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
    transientPublishes: transient,
    deliveriesOf: (messageId) => deliveries.get(messageId) ?? 0,
    strayedSettlements: strayed,
    channelsClosedByBroker: closedByBroker,
    heartbeats,

    stall() {
      stalled = true;
    },
    cut() {
      for (const socket of sockets) socket.destroy();
      stalled = false;
    },
    pauseReading() {
      reading = false;
      for (const client of clients) client.pause();
    },
    resumeReading() {
      reading = true;
      for (const client of clients) client.resume();
    },
    closeChannels() {
      for (const close of channelClosers) close();
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
