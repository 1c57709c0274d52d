/**
 * The contract between the plumbing and the learner's room hub. The gateway (server/gateway.ts) owns
 * the HTTP upgrade, parses and checks every frame, and tracks which rooms a connection asked for; the
 * hub (src/room-hub.ts) decides who may connect, how a message reaches every member of a room on every
 * instance, and how long a silent or slow connection may stay.
 */
import type { IncomingMessage } from 'node:http';
import type { Redis } from 'ioredis';
import type { WebSocket } from 'ws';

/** One open connection: the gateway creates it once the handshake is done. */
export interface Client {
  /** Unique within this instance; handy in logs. */
  readonly id: number;
  /** Who it is, as `admit` said. */
  readonly user: string;
  /** The ws socket: send, ping, close, terminate, bufferedAmount. */
  readonly socket: WebSocket;
}

/**
 * The answer to an upgrade request, given before the handshake. Refused, the gateway answers with
 * the HTTP status and the reason in a problem body, and the request never becomes a WebSocket.
 */
export type Admission = { ok: true; user: string } | { ok: false; status: 401 | 403; reason: string };

/**
 * Runs `fn` every `ms` milliseconds until the returned function is called. The spec passes a manual
 * clock (each tick is one interval), so it counts intervals instead of waiting for them.
 */
export type Every = (ms: number, fn: () => void) => () => void;

/** setInterval, unref'd: a heartbeat timer alone must not keep a process alive. */
export const realClock: Every = (ms, fn) => {
  const timer = setInterval(fn, ms);
  timer.unref();
  return () => clearInterval(timer);
};

/** What a hub is built from, per instance. */
export interface HubOptions {
  /** This instance's name (a, b, c): in logs and the welcome frame. */
  instance: string;
  /** A Redis connection for commands (XADD, XRANGE, PUBLISH, ...). */
  redis: Redis;
  /**
   * A second connection, for SUBSCRIBE only. Over RESP2 a connection that subscribes may send nothing
   * else until it unsubscribes; ioredis 6 speaks RESP3, which lifts that rule, but subscriptions on a
   * connection of their own still mean a slow command (a long XRANGE) never holds up live messages,
   * and a reconnect of one never disturbs the other.
   */
  subscriber: Redis;
  /** Put every Redis key and channel under this prefix (the spec deletes the keys afterwards). */
  prefix: string;
  /** How often to check that each connection is still there. */
  heartbeatMs: number;
  /** The clock the heartbeat runs on (real, or the spec's manual one). */
  every: Every;
  /** The most bytes the server may hold queued for one connection before it gives up on it. */
  sendBufferCap: number;
  /** About how many messages each room keeps for resuming (Redis `MAXLEN ~`). */
  historyMax: number;
  /**
   * How long a room's history outlives its last message, in seconds. A room nobody posts to any more
   * must not keep its stream for ever; a client resuming after that is told with a `gap` frame.
   */
  historyTtlSec: number;
  /** The HMAC key tokens are signed with (server/token.ts). */
  tokenSecret: string;
  /** Browser origins allowed besides the server's own (the Host the request was sent to). */
  allowedOrigins: readonly string[];
}

/**
 * What the gateway calls. Every method may throw: the client then gets an error frame, `unavailable`
 * when Redis is down or not answering (isRedisOutage), `internal` for anything else (a bug, logged).
 */
export interface RoomHub {
  /** Called in the HTTP 'upgrade' handler, before the handshake: who is this, and may they connect? */
  admit(req: IncomingMessage): Admission | Promise<Admission>;
  /** The handshake is done and `client` is open. */
  connect(client: Client): void;
  /**
   * `client` joins `room`. With `lastId`, it is coming back after a disconnect and wants every message
   * after that one first. Resolves once the client is a live member (the gateway then sends `joined`).
   */
  join(client: Client, room: string, lastId?: string): Promise<void>;
  /** `client` leaves `room` (it had joined it). */
  leave(client: Client, room: string): Promise<void>;
  /** `client` posts `text` to `room` (it has joined it): every member, on every instance, gets it. */
  send(client: Client, room: string, text: string): Promise<void>;
  /** `client` is gone (closed, terminated, or the network dropped): forget it. */
  disconnect(client: Client): void;
  /** The instance is stopping: stop timers. (The lab closes the Redis connections itself.) */
  close(): Promise<void>;
}
