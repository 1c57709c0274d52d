/**
 * The frames a client and the server exchange, one JSON object per WebSocket text frame. Client frames
 * are checked with zod before the room hub sees them, so the hub only ever handles well-formed input.
 *
 *   client -> server   {"type":"join","room":"lobby","lastId":"1718000000000-0"}   (lastId: resume)
 *                      {"type":"leave","room":"lobby"}
 *                      {"type":"send","room":"lobby","text":"hello"}
 *   server -> client   welcome, joined, left, message, gap, error (below)
 */
import { z } from '@labs/lab-kit';

/** The longest message text, in characters. Frames larger than the configured maxPayload never get here. */
export const MAX_TEXT = 16_000;

/** A room name: short and safe to put into a Redis key or channel name as it is. */
export const roomName = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 characters from A-Z, a-z, 0-9, _ and -');

/** A message id, as Redis Streams write them: milliseconds, a dash, a sequence number. */
export const messageId = z
  .string()
  .regex(/^\d{1,15}-\d{1,15}$/, 'must be a message id as the server sent it, like "1718000000000-0"');

/** Every frame a client may send. `.strict()`: an unknown field is a mistake worth reporting. */
export const clientFrame = z.discriminatedUnion(
  'type',
  [
    z.object({ type: z.literal('join'), room: roomName, lastId: messageId.optional() }).strict(),
    z.object({ type: z.literal('leave'), room: roomName }).strict(),
    z.object({ type: z.literal('send'), room: roomName, text: z.string().min(1).max(MAX_TEXT) }).strict(),
  ],
  { error: 'must be an object whose type is join, leave or send' },
);

/** Whether `clientFrame` refused a frame for its type (none, or one nobody defined), not for its fields. */
export const isUnknownType = (issue: z.core.$ZodIssue) =>
  (issue.code === 'invalid_type' && issue.path.length === 0) || issue.code === 'invalid_union';
export type ClientFrame = z.infer<typeof clientFrame>;

/** One message in a room, as every member receives it (live, or replayed after a reconnect). */
export interface MessageFrame {
  type: 'message';
  room: string;
  /** Increases within a room; a client keeps the last one it saw and sends it back to resume. */
  id: string;
  from: string;
  text: string;
  /** When the server accepted it (epoch ms). */
  at: number;
}

/** Why a frame was refused; `detail` says what to change. */
export type ErrorCode =
  | 'bad-json'
  | 'bad-frame'
  | 'unknown-type'
  | 'not-joined'
  | 'already-joined'
  | 'too-many-rooms'
  /** A service the server needs (Redis) is down or not answering: nothing happened that you can see; try again. */
  | 'unavailable'
  /** A bug on the server's side: the details went to its log, not to you. */
  | 'internal';

/** Every frame the server sends. */
export type ServerFrame =
  | { type: 'welcome'; user: string; instance: string }
  | { type: 'joined'; room: string }
  | { type: 'left'; room: string }
  | MessageFrame
  /**
   * Sent on a resume when history no longer reaches back to `lastId`: messages were lost for this
   * client. What the room still keeps follows (from `oldestId`); anything older must come from elsewhere.
   */
  | { type: 'gap'; room: string; lastId: string; oldestId: string | null; detail: string }
  /**
   * A frame refused. With `unavailable`, `retryAfterSec` says when trying again is worth it, as an
   * HTTP 503's Retry-After does.
   */
  | { type: 'error'; error: ErrorCode; detail: string; retryAfterSec?: number };

/** A server frame as the text sent on the wire. */
export function encode(frame: ServerFrame): string {
  return JSON.stringify(frame);
}

/**
 * Close codes (RFC 6455 section 7.4). 1000-2999 are the protocol's; 4000-4999 are ours to define, and
 * the reason string (at most 123 bytes) says what happened in words.
 */
export const CLOSE = {
  /** The server is shutting down: reconnect (elsewhere) and resume. */
  GOING_AWAY: 1001,
  /** The client broke a rule (too many frames in flight). */
  POLICY: 1008,
  /** A frame over maxPayload (ws sends this one itself). */
  TOO_BIG: 1009,
  /** The client did not read fast enough: its send buffer passed the cap. Reconnect and resume. */
  SLOW_CONSUMER: 4008,
} as const;

/**
 * Orders two message ids (`ms-seq`) as Redis does: by milliseconds, then by sequence. Negative when
 * `a` comes first, 0 when equal, positive when `a` comes later.
 */
export function compareIds(a: string, b: string): number {
  const [aMs = 0, aSeq = 0] = a.split('-').map(Number);
  const [bMs = 0, bSeq = 0] = b.split('-').map(Number);
  return aMs === bMs ? aSeq - bSeq : aMs - bMs;
}
