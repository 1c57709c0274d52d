/**
 * A WebSocket client for the spec: it records every frame, counts pings, and can stop reading its
 * socket (a frozen or overwhelmed client). Waits are bounded polls for a condition, never sleeps.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { WebSocket } from 'ws';
import type { MessageFrame, ServerFrame } from '../server/protocol.ts';

export interface Closed {
  code: number;
  reason: string;
}

export interface TestClient {
  readonly user: string;
  /** The instance that answered (from the welcome frame). */
  readonly instance: string;
  /** Every frame received, oldest first. */
  readonly frames: ServerFrame[];
  /** Pings received from the server. */
  readonly pings: number;
  /** Set once the connection closed: the code and reason the client saw (1006: cut off without a close frame). */
  readonly closed: Closed | undefined;
  /** The message frames received for `room`, oldest first. */
  messages(room: string): MessageFrame[];
  /** Sends `frame` as JSON. */
  send(frame: unknown): void;
  /** Sends a text (or, given a Buffer, binary) frame as it is. */
  sendRaw(data: string | Buffer): void;
  /** Joins `room` and resolves with the frames that came with the join (gap, replayed messages, joined). */
  join(room: string, lastId?: string): Promise<ServerFrame[]>;
  /** One request and its answer: everything the server wrote before the answer has arrived. */
  roundTrip(): Promise<void>;
  /** Stops reading the socket: the kernel's buffers fill, then the server's. */
  pause(): void;
  resume(): void;
  /** Cuts the connection (no close handshake) and waits until it is closed. */
  close(): Promise<void>;
}

/** Every client opened by `connect`, so a test's clean-up can close them all. */
const opened = new Set<TestClient>();

/** Polls `condition` every 5 ms until it holds (true) or `timeoutMs` passes (false). */
export async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * Opens a WebSocket to `url` (ws://host/ws?token=...), with `headers` on its upgrade request, and waits
 * for the server's welcome frame.
 */
export async function connect(
  url: string,
  options: { user?: string; origin?: string; headers?: Record<string, string> } = {},
): Promise<TestClient> {
  const ws = new WebSocket(url, { origin: options.origin, headers: options.headers });
  const frames: ServerFrame[] = [];
  let pings = 0;
  let closed: Closed | undefined;
  let roundTrips = 0;
  ws.on('message', (data) => frames.push(JSON.parse(data.toString()) as ServerFrame));
  ws.on('ping', () => pings++);
  ws.on('error', () => {});
  ws.on('close', (code, reason) => {
    closed = { code, reason: reason.toString() };
  });
  const socket = () => (ws as unknown as { _socket: Socket })._socket;

  /** Resolves with frames[from..] once one of them matches `done`; rejects after 5 s. */
  const framesUntil = async (from: number, done: (frame: ServerFrame) => boolean, what: string) => {
    const found = () => frames.slice(from).findIndex(done);
    if (!(await waitFor(() => found() >= 0 || closed !== undefined)) || found() < 0) {
      throw new Error(
        `${options.user ?? 'client'}: no ${what} (connection ${closed ? `closed ${closed.code}` : 'open'})`,
      );
    }
    return frames.slice(from, from + found() + 1);
  };

  const client: TestClient = {
    user: options.user ?? 'client',
    get instance() {
      const welcome = frames.find((f) => f.type === 'welcome');
      return welcome?.type === 'welcome' ? welcome.instance : '?';
    },
    frames,
    get pings() {
      return pings;
    },
    get closed() {
      return closed;
    },
    messages: (room) => frames.filter((f): f is MessageFrame => f.type === 'message' && f.room === room),
    send: (frame) => ws.send(JSON.stringify(frame)),
    sendRaw: (data) => ws.send(data, { binary: typeof data !== 'string' }),
    async join(room, lastId) {
      const from = frames.length;
      client.send(lastId === undefined ? { type: 'join', room } : { type: 'join', room, lastId });
      const came = await framesUntil(
        from,
        (f) => (f.type === 'joined' && f.room === room) || f.type === 'error',
        `joined frame for ${room}`,
      );
      const last = came.at(-1);
      if (last?.type === 'error') throw new Error(`join ${room} refused: ${last.error}: ${last.detail}`);
      return came;
    },
    async roundTrip() {
      // Leaving a room never joined is answered with an error frame naming that room.
      const room = `round-trip-${++roundTrips}`;
      const from = frames.length;
      client.send({ type: 'leave', room });
      await framesUntil(from, (f) => f.type === 'error' && f.detail.includes(room), 'answer to a round trip');
    },
    pause: () => socket().pause(),
    resume: () => socket().resume(),
    async close() {
      opened.delete(client);
      if (ws.readyState === WebSocket.CLOSED) return;
      const done = new Promise((resolve) => ws.once('close', resolve));
      ws.terminate();
      await done;
    },
  };
  opened.add(client);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (req, res) => {
      req.destroy();
      reject(new Error(`upgrade refused: ${res.statusCode}`));
    });
    ws.once('error', reject);
  });
  await framesUntil(0, (f) => f.type === 'welcome', 'welcome frame');
  return client;
}

/** Closes every client still open. */
export async function closeAllClients(): Promise<void> {
  await Promise.all([...opened].map((client) => client.close()));
}

/**
 * Tries a WebSocket handshake and reports how it ended: 101 (it became a WebSocket, closed again at
 * once) or the HTTP status the server answered instead, with its headers and body.
 */
export async function tryUpgrade(
  url: string,
  origin?: string,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  const ws = new WebSocket(url, { origin });
  ws.on('error', () => {});
  return new Promise((resolve, reject) => {
    ws.once('open', () => {
      ws.terminate();
      resolve({ status: 101, headers: {}, body: '' });
    });
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      res.on('end', () => {
        req.destroy();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
    ws.once('error', reject);
  });
}
