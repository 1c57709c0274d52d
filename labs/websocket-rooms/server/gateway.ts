/**
 * The WebSocket side of one instance: the HTTP 'upgrade' handler, the ws server, and the frame loop.
 * It checks every frame against the protocol (server/protocol.ts) and hands the room hub only valid
 * requests; it never decides who is in a room or how messages travel, which is the hub's job.
 *
 * One ws WebSocketServer per HTTP server, in `noServer` mode: the upgrade handler runs first, so a
 * request the hub refuses is answered with a plain HTTP status and never becomes a WebSocket.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { type RawData, WebSocket, WebSocketServer } from 'ws';
import {
  closeWebSockets,
  failureReporter,
  handshakeProblem,
  readJsonMessage,
  refuseUpgrade,
  type UpgradeRefusal,
} from '@labs/lab-kit';
import { isRedisOutage } from '@labs/services';
import type { Client, RoomHub } from './hub.ts';
import { CLOSE, clientFrame, type ErrorCode, encode, isUnknownType, type ServerFrame } from './protocol.ts';

/** Where clients connect. */
export const WS_PATH = '/ws';
/** How many rooms one connection may be in at once. */
export const MAX_ROOMS_PER_CLIENT = 50;
/** Frames of one connection waiting for the hub; beyond this the client is flooding (close 1008). */
export const MAX_FRAMES_IN_FLIGHT = 100;
/**
 * When to try again after an outage answer (an upgrade's 503, an `unavailable` frame). One second: a
 * Redis command gives up after one (server/lab.ts), so sooner would only meet the same failure.
 */
export const RETRY_AFTER_SEC = 1;

/** What GET /api/stats shows: counts a spec or a curious learner can read. */
export type GatewayStats = ReturnType<Gateway['stats']>;
export type Gateway = ReturnType<typeof createGateway>;

/**
 * `maxPayload`: the largest frame a client may send, in bytes (ws closes the connection with 1009
 * above it). `log`: where to report what goes wrong on the server's side, Redis down (at most a line
 * every 5 s) or a bug.
 */
export function createGateway(options: {
  hub: RoomHub;
  instance: string;
  maxPayload: number;
  log?: (message: string) => void;
}) {
  const { hub, instance, maxPayload } = options;
  // Sorted as the HTTP side's problemHandler sorts: Redis down or stalled is an outage the client can
  // wait out (a line every 5 s at most); anything else is a bug, logged in full, and the client learns
  // only that it happened on our side.
  const isOutage = failureReporter({
    outages: [{ test: isRedisOutage, service: 'Redis' }],
    log: options.log ?? ((line) => console.warn(`[websocket-rooms] ${line}`)),
  });
  // perMessageDeflate off (also ws's default): compression costs memory per connection and CPU per frame.
  const wss = new WebSocketServer({ noServer: true, maxPayload, perMessageDeflate: false });
  // Whatever else ws finds wrong with a handshake (a malformed Sec-WebSocket-Protocol, say) is a 400
  // problem too: with a listener here, ws leaves the answer to us instead of writing plain text.
  wss.on('wsClientError', (error, socket) => {
    counts.upgradesRefused++;
    refuseUpgrade(socket, { status: 400, detail: error.message });
  });
  const counts = { upgradesAccepted: 0, upgradesRefused: 0, framesRefused: 0 };
  let nextClientId = 0;

  async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => {}); // a client that vanishes mid-handshake is not the server's problem
    const refused = (refusal: UpgradeRefusal) => {
      counts.upgradesRefused++;
      refuseUpgrade(socket, refusal, RETRY_AFTER_SEC);
    };
    // A malformed handshake is the client's mistake, whoever it is: said first.
    const malformed = handshakeProblem(req, WS_PATH);
    if (malformed) return refused(malformed);
    let admission: Awaited<ReturnType<RoomHub['admit']>>;
    try {
      admission = await hub.admit(req);
    } catch (error) {
      // The client still sees an HTTP status, before any handshake: 503 with Retry-After for an outage
      // (try again, or another instance), 500 for a bug.
      if (isOutage(`admit failed on ${instance}`, error))
        refused({ status: 503, detail: 'Could not check the request; try again' });
      else refused({ status: 500, detail: 'Something went wrong on our side; the log has the details' });
      return;
    }
    if (!admission.ok) {
      const challenge = admission.status === 401 ? { 'WWW-Authenticate': 'Bearer realm="rooms"' } : undefined;
      return refused({ status: admission.status, detail: admission.reason, headers: challenge });
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
    const refuseFrame = (error: ErrorCode, detail: string, retryAfterSec?: number) => {
      counts.framesRefused++;
      reply({ type: 'error', error, detail, retryAfterSec });
    };

    async function handle(data: RawData, isBinary: boolean): Promise<void> {
      if (isBinary) return refuseFrame('bad-frame', 'Frames are JSON text, not binary');
      const read = readJsonMessage(data.toString(), clientFrame);
      if (!read.ok) {
        if (read.notJson) return refuseFrame('bad-json', 'A frame must be one JSON object');
        return refuseFrame(read.issues.some(isUnknownType) ? 'unknown-type' : 'bad-frame', read.detail);
      }
      const frame = read.value;
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
        if (!isOutage(`${frame.type} failed on ${instance}`, error))
          return refuseFrame('internal', `Could not ${frame.type}: something went wrong on our side; see the log`);
        const detail = `Could not ${frame.type} right now: the message service is not answering; try again`;
        refuseFrame('unavailable', detail, RETRY_AFTER_SEC);
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

  return {
    /**
     * Handles WebSocket upgrades on `server`; returns the step that closes its WebSockets (1001, and
     * terminated if they do not answer in time), which the lab kit runs when the server closes: an
     * upgraded socket is no longer the HTTP server's to close.
     */
    attach(server: Server) {
      server.on('upgrade', (req, socket, head) => void onUpgrade(req, socket, head));
      return async () => {
        await closeWebSockets(wss.clients, { code: CLOSE.GOING_AWAY, reason: 'shutting down; reconnect and resume' });
        await new Promise((resolve) => wss.close(resolve));
      };
    },
    stats() {
      let open = 0; // of the connections, the ones still open
      let bufferedBytes = 0; // queued for all connections: what slow readers cost in memory
      let maxBufferedBytes = 0; // the most queued for any one connection right now
      for (const ws of wss.clients) {
        if (ws.readyState === WebSocket.OPEN) open++;
        bufferedBytes += ws.bufferedAmount;
        maxBufferedBytes = Math.max(maxBufferedBytes, ws.bufferedAmount);
      }
      // connections: what the server still holds (open, or closing and not yet gone)
      return { instance, connections: wss.clients.size, open, bufferedBytes, maxBufferedBytes, ...counts };
    },
  };
}
