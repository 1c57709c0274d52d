/**
 * WRONG FIX: takes its own subscriber connection with autoResubscribe off, reasoning that join()
 * subscribes to each room anyway. But join() subscribes only when a room is new on this instance:
 * after the connection drops and comes back, rooms that already had members are never subscribed
 * again, and their members hear nothing more while their sockets look perfectly healthy.
 *
 * @catches an instance whose Redis subscriber connection dropped and came back still delivers to its members
 */
import type { IncomingMessage } from 'node:http';
import type { Redis } from 'ioredis';
import { WebSocket } from 'ws';
import type { Admission, Client, HubOptions, RoomHub } from '../../server/hub.ts';
import { CLOSE, compareIds, encode, type MessageFrame, type ServerFrame } from '../../server/protocol.ts';
import { verifyToken } from '../../server/token.ts';

/**
 * Append and publish as one step. Two separate commands from two instances could interleave (A appends,
 * B appends, B publishes, A publishes), and live order would then differ from history order, which
 * breaks "send only ids after the last one sent". A script runs alone, so both orders are the same.
 * The id comes from Redis's clock (XADD *), not from an instance's, so instances need not agree on time.
 */
const POST_SCRIPT = `
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'from', ARGV[2], 'text', ARGV[3], 'at', ARGV[4])
redis.call('PUBLISH', ARGV[5], cjson.encode({ id = id, from = ARGV[2], text = ARGV[3], at = ARGV[4] }))
return id`;

type PostingRedis = Redis & {
  postToRoom(history: string, maxLen: number, from: string, text: string, at: number, channel: string): Promise<string>;
};

/** History is replayed in pages of this many entries, so one resume never asks Redis for everything at once. */
const REPLAY_PAGE = 200;

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
  /** Settles once this instance's subscriber listens on the room's channel. */
  subscribed: Promise<unknown>;
}

/** A flat [name, value, name, value, ...] reply (stream fields, XINFO) as a Map. */
function pairs(list: unknown[]): Map<string, unknown> {
  const map = new Map<string, unknown>();
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
  const { prefix, sendBufferCap, historyMax, tokenSecret, allowedOrigins } = options;
  // Our own subscriber; we subscribe per room in join(), so ioredis need not do it again.
  const subscriber = options.redis.duplicate({ autoResubscribe: false });
  options.redis.defineCommand('postToRoom', { numberOfKeys: 1, lua: POST_SCRIPT });
  const redis = options.redis as PostingRedis;

  /** Rooms with at least one member on this instance, by channel. */
  const rooms = new Map<string, Room>();
  const clients = new Set<Client>();
  /** Clients that answered the last ping (or connected since). */
  const alive = new Set<Client>();
  const channelOf = (room: string) => `${prefix}room:${room}`;

  /**
   * Sends `frame` unless the client's queue is already over the cap. ws never refuses a send: what the
   * kernel will not take waits in this process (bufferedAmount), so one client that stops reading would
   * grow the server's memory without end. Over the cap it is closed with a code and a reason; the
   * close frame waits behind the queue, so a client that was only slow still reads why, and resumes.
   */
  function sendCapped(client: Client, frame: ServerFrame): void {
    const { socket } = client;
    if (socket.readyState !== WebSocket.OPEN) return;
    if (socket.bufferedAmount > sendBufferCap) {
      socket.close(CLOSE.SLOW_CONSUMER, `send buffer passed ${sendBufferCap} bytes; reconnect with your last id`);
      return;
    }
    socket.send(encode(frame));
  }

  function deliver(member: Member, frame: MessageFrame): void {
    if (member.waiting) {
      member.waiting.push(frame);
      return;
    }
    // Already sent during the replay (it was in the history and arrived live too).
    if (member.lastSentId !== undefined && compareIds(frame.id, member.lastSentId) <= 0) return;
    member.lastSentId = frame.id;
    sendCapped(member.client, frame);
  }

  const onMessage = (channel: string, payload: string) => {
    const room = rooms.get(channel);
    if (!room) return; // unsubscribed a moment ago
    const { id, from, text, at } = JSON.parse(payload) as { id: string; from: string; text: string; at: string };
    const frame: MessageFrame = { type: 'message', room: room.name, id, from, text, at: Number(at) };
    for (const member of room.members.values()) deliver(member, frame);
  };
  subscriber.on('message', onMessage);

  function openRoom(name: string): Room {
    const channel = channelOf(name);
    let room = rooms.get(channel);
    if (!room) {
      room = {
        name,
        channel,
        history: `${channel}:history`,
        members: new Map(),
        subscribed: subscriber.subscribe(channel),
      };
      rooms.set(channel, room);
    }
    return room;
  }

  function removeMember(room: Room, client: Client): void {
    room.members.delete(client);
    if (room.members.size > 0) return;
    rooms.delete(room.channel);
    // A failed unsubscribe only means messages for a room we no longer track, which onMessage ignores.
    subscriber.unsubscribe(room.channel).catch(() => undefined);
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
      sendCapped(client, { type: 'gap', room: room.name, lastId, oldestId, detail });
      start = '-';
    }
    for (;;) {
      const page = await redis.xrange(room.history, start, '+', 'COUNT', REPLAY_PAGE);
      for (const [id, fields] of page) {
        if (client.socket.readyState !== WebSocket.OPEN) return;
        member.lastSentId = id;
        sendCapped(client, messageFrame(room.name, id, fields));
      }
      const last = page.at(-1);
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
      const origin = req.headers.origin;
      if (origin !== undefined && !allowedOrigins.includes(origin)) {
        const sameHost = URL.canParse(origin) && new URL(origin).host === req.headers.host;
        if (!sameHost) return { ok: false, status: 403, reason: `Origin ${origin} may not connect here` };
      }
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
      const waiting = member.waiting ?? [];
      member.waiting = undefined;
      for (const frame of waiting) deliver(member, frame);
    },

    async leave(client: Client, name: string): Promise<void> {
      const room = rooms.get(channelOf(name));
      if (room) removeMember(room, client);
    },

    async send(client: Client, room: string, text: string): Promise<void> {
      const channel = channelOf(room);
      await redis.postToRoom(`${channel}:history`, historyMax, client.user, text, Date.now(), channel);
    },

    disconnect(client: Client): void {
      clients.delete(client);
      alive.delete(client);
      for (const room of [...rooms.values()]) if (room.members.has(client)) removeMember(room, client);
    },

    async close(): Promise<void> {
      stopHeartbeat();
      subscriber.off('message', onMessage);
      subscriber.disconnect();
      rooms.clear();
      clients.clear();
    },
  };
}
