/**
 * The WebSocket side of one instance: the HTTP 'upgrade' handler, the ws server, and the frame loop.
 * It checks every frame against the protocol (server/protocol.ts) and hands the room hub only valid
 * requests; it never decides who is in a room or how messages travel, which is the hub's job.
 *
 * One ws WebSocketServer per HTTP server, in `noServer` mode: the upgrade handler runs first, so a
 * request the hub refuses is answered with a plain HTTP status and never becomes a WebSocket.
 */
import { type IncomingMessage, type Server, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { type RawData, WebSocket, WebSocketServer } from 'ws';
import { atMostEvery, describeIssues } from '@labs/lab-kit';
import { isRedisOutage } from '@labs/services';
import type { Client, RoomHub } from './hub.ts';
import { CLIENT_FRAME_TYPES, CLOSE, clientFrame, type ErrorCode, encode, type ServerFrame } from './protocol.ts';

/** Where clients connect. */
export const WS_PATH = '/ws';
/** How many rooms one connection may be in at once. */
export const MAX_ROOMS_PER_CLIENT = 50;
/** Frames of one connection waiting for the hub; beyond this the client is flooding (close 1008). */
export const MAX_FRAMES_IN_FLIGHT = 100;
/** How long a shutdown waits for clients to answer the close frame before cutting them off. */
const SHUTDOWN_GRACE_MS = 1000;
/**
 * When to try again after an outage answer (an upgrade's 503, an `unavailable` frame). One second: a
 * Redis command gives up after one (server/lab.ts), so sooner would only meet the same failure.
 */
export const RETRY_AFTER_SEC = 1;

export interface GatewayOptions {
  hub: RoomHub;
  instance: string;
  /** The largest frame a client may send, in bytes; ws closes the connection with 1009 above it. */
  maxPayload: number;
  /** Where to report what goes wrong on the server's side: Redis down (at most a line every 5 s), or a bug. */
  log?: (message: string) => void;
}

/** What GET /api/stats shows: counts a spec or a curious learner can read. */
export interface GatewayStats {
  instance: string;
  /** Connections the server still holds (open, or closing and not yet gone). */
  connections: number;
  /** Of those, the ones still open. */
  open: number;
  /** Bytes queued for all connections (ws bufferedAmount): what slow readers cost in memory. */
  bufferedBytes: number;
  /** The most bytes queued for any one connection right now. */
  maxBufferedBytes: number;
  upgradesAccepted: number;
  upgradesRefused: number;
  framesRefused: number;
}

export interface Gateway {
  /**
   * Handles WebSocket upgrades on `server`; returns the step that closes its WebSockets, which the lab
   * kit runs when the server closes (an upgraded socket is no longer the HTTP server's to close).
   */
  attach(server: Server): () => Promise<void>;
  stats(): GatewayStats;
  /** Closes every WebSocket with 1001 (terminating those that do not answer in time). */
  shutdown(): Promise<void>;
}

/** What a WebSocket handshake's Sec-WebSocket-Key is: 16 random bytes in base64 (RFC 6455, section 4.1). */
const HANDSHAKE_KEY = /^[+/0-9A-Za-z]{22}==$/;
/** The protocol versions ws speaks: 13 (RFC 6455) and 8 (its last draft, still sent by old clients). */
const HANDSHAKE_VERSIONS = ['13', '8'];

/**
 * Answers an upgrade request with an HTTP error as a problem (RFC 9457), like every other 4xx and 5xx of
 * the labs: the handshake never happens. `headers` adds what the status calls for (Allow, ...).
 */
function refuse(socket: Duplex, status: number, detail: string, extra: Record<string, string> = {}): void {
  const title = STATUS_CODES[status] ?? 'Error';
  const body = JSON.stringify({ title, status, detail });
  const headers = [
    `HTTP/1.1 ${status} ${title}`,
    'Content-Type: application/problem+json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...(status === 401 ? ['WWW-Authenticate: Bearer realm="rooms"'] : []),
    // A 503 is an outage: say when coming back is worth it, as every 503 of the labs does.
    ...(status === 503 ? [`Retry-After: ${RETRY_AFTER_SEC}`] : []),
    ...Object.entries(extra).map(([name, value]) => `${name}: ${value}`),
  ];
  socket.end(`${headers.join('\r\n')}\r\n\r\n${body}`);
}

export function createGateway(options: GatewayOptions): Gateway {
  const { hub, instance, maxPayload } = options;
  const write = options.log ?? ((m: string) => console.warn(`[websocket-rooms] ${m}`));
  // During an outage every frame fails the same way: one line per 5 s, with how many were not shown.
  const logOutage = atMostEvery(5000, (message: string, suppressed) =>
    write(suppressed > 0 ? `${message} (and ${suppressed} more failures since the last report)` : message),
  );
  /**
   * Sorts a failure of the hub by its cause, as the HTTP side's problemHandler does: Redis down or
   * stalled is an outage the client can wait out (true); anything else is a bug, logged in full every
   * time, and the client learns only that it happened on our side (false).
   */
  const isOutage = (what: string, error: unknown): boolean => {
    if (isRedisOutage(error)) {
      logOutage(`${what}: Redis is not answering: ${(error as Error).message}`);
      return true;
    }
    write(`${what}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    return false;
  };
  // perMessageDeflate off (also ws's default): compression costs memory per connection and CPU per frame.
  const wss = new WebSocketServer({ noServer: true, maxPayload, perMessageDeflate: false });
  // Whatever else ws finds wrong with a handshake (a malformed Sec-WebSocket-Protocol, say) is a 400
  // problem too: with a listener here, ws leaves the answer to us instead of writing plain text.
  wss.on('wsClientError', (error, socket) => {
    counts.upgradesRefused++;
    refuse(socket, 400, error.message);
  });
  const counts = { upgradesAccepted: 0, upgradesRefused: 0, framesRefused: 0 };
  let nextClientId = 0;

  async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => {}); // a client that vanishes mid-handshake is not the server's problem
    const refused = (status: number, detail: string, extra?: Record<string, string>) => {
      counts.upgradesRefused++;
      refuse(socket, status, detail, extra);
    };
    if (new URL(req.url ?? '/', 'http://localhost').pathname !== WS_PATH) {
      refused(404, `WebSockets are served on ${WS_PATH}`);
      return;
    }
    if (req.headers.upgrade?.toLowerCase() !== 'websocket') {
      refused(400, 'Only the websocket upgrade is supported');
      return;
    }
    // A malformed handshake is the client's mistake, whoever it is: said first, and as a problem (ws
    // would answer these itself, but in plain text).
    if (req.method !== 'GET') {
      refused(405, 'A WebSocket handshake is a GET request', { Allow: 'GET' });
      return;
    }
    const key = req.headers['sec-websocket-key'];
    if (key === undefined || !HANDSHAKE_KEY.test(key)) {
      refused(400, 'Sec-WebSocket-Key must be 16 random bytes in base64, as WebSocket clients send');
      return;
    }
    const version = req.headers['sec-websocket-version'] ?? '';
    if (!HANDSHAKE_VERSIONS.includes(version)) {
      refused(400, `Sec-WebSocket-Version must be one of ${HANDSHAKE_VERSIONS.join(', ')}`, {
        'Sec-WebSocket-Version': HANDSHAKE_VERSIONS.join(', '),
      });
      return;
    }
    let admission: Awaited<ReturnType<RoomHub['admit']>>;
    try {
      admission = await hub.admit(req);
    } catch (error) {
      // The client still sees an HTTP status, before any handshake: 503 with Retry-After for an outage
      // (try again, or another instance), 500 for a bug.
      if (isOutage(`admit failed on ${instance}`, error)) refused(503, 'Could not check the request; try again');
      else refused(500, 'Something went wrong on our side; the log has the details');
      return;
    }
    if (!admission.ok) {
      refused(admission.status, admission.reason);
      return;
    }
    if (socket.destroyed) return;
    const { user } = admission;
    wss.handleUpgrade(req, socket, head, (ws) => {
      counts.upgradesAccepted++;
      onConnection(ws, user);
    });
  }

  function onConnection(ws: WebSocket, user: string): void {
    const client: Client = { id: ++nextClientId, user, socket: ws };
    const rooms = new Set<string>();
    // Frames are handled one after another, so a join has finished before the next frame is read.
    let chain = Promise.resolve();
    let inFlight = 0;

    const reply = (frame: ServerFrame) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(encode(frame));
    };
    const refuseFrame = (error: ErrorCode, detail: string) => {
      counts.framesRefused++;
      reply({ type: 'error', error, detail });
    };

    async function handle(data: RawData, isBinary: boolean): Promise<void> {
      if (isBinary) return refuseFrame('bad-frame', 'Frames are JSON text, not binary');
      let raw: unknown;
      try {
        raw = JSON.parse(data.toString());
      } catch {
        return refuseFrame('bad-json', 'A frame must be one JSON object');
      }
      const type = typeof raw === 'object' && raw !== null ? (raw as { type?: unknown }).type : undefined;
      if (!CLIENT_FRAME_TYPES.includes(type as never)) {
        return refuseFrame(
          'unknown-type',
          `type must be one of ${CLIENT_FRAME_TYPES.join(', ')}; got ${JSON.stringify(type) ?? 'nothing'}`,
        );
      }
      const parsed = clientFrame.safeParse(raw);
      if (!parsed.success) return refuseFrame('bad-frame', describeIssues(parsed.error).join('; '));
      const frame = parsed.data;
      try {
        if (frame.type === 'join') {
          if (rooms.has(frame.room)) return refuseFrame('already-joined', `Already in ${frame.room}; leave it first`);
          if (rooms.size >= MAX_ROOMS_PER_CLIENT) {
            return refuseFrame('too-many-rooms', `At most ${MAX_ROOMS_PER_CLIENT} rooms per connection`);
          }
          rooms.add(frame.room);
          try {
            await hub.join(client, frame.room, frame.lastId);
          } catch (error) {
            rooms.delete(frame.room);
            await hub.leave(client, frame.room).catch(() => undefined);
            throw error;
          }
          reply({ type: 'joined', room: frame.room });
        } else if (!rooms.has(frame.room)) {
          refuseFrame('not-joined', `Join ${frame.room} first`);
        } else if (frame.type === 'leave') {
          rooms.delete(frame.room);
          await hub.leave(client, frame.room);
          reply({ type: 'left', room: frame.room });
        } else {
          await hub.send(client, frame.room, frame.text);
        }
      } catch (error) {
        // Never silence: the client gets an error frame for the frame that failed, and the connection
        // (with its other rooms) stays.
        if (isOutage(`${frame.type} failed on ${instance}`, error)) {
          counts.framesRefused++;
          reply({
            type: 'error',
            error: 'unavailable',
            detail: `Could not ${frame.type} right now: the message service is not answering; try again`,
            retryAfterSec: RETRY_AFTER_SEC,
          });
        } else {
          refuseFrame('internal', `Could not ${frame.type}: something went wrong on our side; the log has the details`);
        }
      }
    }

    ws.on('error', () => {}); // ws closes the connection itself (1009 for a frame over maxPayload, 1002...)
    ws.on('message', (data, isBinary) => {
      if (inFlight >= MAX_FRAMES_IN_FLIGHT) {
        ws.close(CLOSE.POLICY, `more than ${MAX_FRAMES_IN_FLIGHT} frames waiting; slow down`);
        return;
      }
      inFlight++;
      chain = chain
        .then(() => handle(data, isBinary))
        .catch((error: Error) => void isOutage(`frame failed on ${instance}`, error))
        .finally(() => inFlight--);
    });
    ws.on('close', () => {
      chain = chain
        .then(() => hub.disconnect(client))
        .catch((error: Error) => void isOutage(`disconnect failed on ${instance}`, error));
    });
    hub.connect(client);
    reply({ type: 'welcome', user, instance });
  }

  const shutdown = async () => {
    const open = [...wss.clients];
    for (const ws of open) ws.close(CLOSE.GOING_AWAY, 'server shutting down; reconnect and resume');
    const closed = open.map((ws) => new Promise((resolve) => ws.once('close', resolve)));
    const grace = new Promise((resolve) => setTimeout(resolve, SHUTDOWN_GRACE_MS).unref());
    await Promise.race([Promise.all(closed), grace]);
    for (const ws of wss.clients) ws.terminate();
    await new Promise((resolve) => wss.close(resolve));
  };

  return {
    attach(server) {
      server.on('upgrade', (req, socket, head) => void onUpgrade(req, socket, head));
      return shutdown;
    },
    stats() {
      let open = 0;
      let bufferedBytes = 0;
      let maxBufferedBytes = 0;
      for (const ws of wss.clients) {
        if (ws.readyState === WebSocket.OPEN) open++;
        bufferedBytes += ws.bufferedAmount;
        maxBufferedBytes = Math.max(maxBufferedBytes, ws.bufferedAmount);
      }
      return { instance, connections: wss.clients.size, open, bufferedBytes, maxBufferedBytes, ...counts };
    },
    shutdown,
  };
}
