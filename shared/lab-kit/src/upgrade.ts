/**
 * WebSocket endpoints the way every lab answers HTTP: a request refused before the handshake gets an
 * RFC 9457 problem like any other 4xx or 5xx (ws would write plain text), and a server that stops
 * says goodbye to its connections before cutting them. No WebSocket library is assumed: the socket an
 * `upgrade` event hands over and anything shaped like ws's WebSocket will do.
 */
import { type IncomingMessage, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';

/** Why an upgrade request is refused: the status, what to change, and headers the status calls for. */
export interface UpgradeRefusal {
  status: number;
  detail: string;
  headers?: Record<string, string>;
}

/**
 * Answers an upgrade request on its raw socket with `status` and a problem body, then ends the
 * socket: the handshake never happens. A 503 says when to come back (`retryAfterSec`, default 1), as
 * every 503 of the labs does.
 */
export function refuseUpgrade(socket: Duplex, refusal: UpgradeRefusal, retryAfterSec = 1): void {
  const { status, detail, headers = {} } = refusal;
  const title = STATUS_CODES[status] ?? 'Error';
  const body = JSON.stringify({ title, status, detail });
  const lines = [
    `HTTP/1.1 ${status} ${title}`,
    'Content-Type: application/problem+json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...(status === 503 ? [`Retry-After: ${retryAfterSec}`] : []),
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
  ];
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
}

/** A Sec-WebSocket-Key: 16 random bytes in base64 (RFC 6455, section 4.1). */
const HANDSHAKE_KEY = /^[+/0-9A-Za-z]{22}==$/;
/** The versions ws speaks: 13 (RFC 6455) and 8 (its last draft, still sent by old clients). */
const HANDSHAKE_VERSIONS = ['13', '8'];

/**
 * What is wrong with an upgrade request for a WebSocket on `path`, before anyone asks who sent it:
 * another path (404), another protocol (400), not a GET (405), a malformed key or an unknown version
 * (400). Undefined when it is a well-formed WebSocket handshake.
 */
export function handshakeProblem(req: IncomingMessage, path: string): UpgradeRefusal | undefined {
  if (new URL(req.url ?? '/', 'http://localhost').pathname !== path)
    return { status: 404, detail: `WebSockets are served on ${path}` };
  if (req.headers.upgrade?.toLowerCase() !== 'websocket')
    return { status: 400, detail: 'Only the websocket upgrade is supported' };
  if (req.method !== 'GET')
    return { status: 405, detail: 'A WebSocket handshake is a GET request', headers: { Allow: 'GET' } };
  const key = req.headers['sec-websocket-key'];
  if (key === undefined || !HANDSHAKE_KEY.test(key))
    return { status: 400, detail: 'Sec-WebSocket-Key must be 16 random bytes in base64, as WebSocket clients send' };
  if (!HANDSHAKE_VERSIONS.includes(req.headers['sec-websocket-version'] ?? '')) {
    const versions = HANDSHAKE_VERSIONS.join(', ');
    return {
      status: 400,
      detail: `Sec-WebSocket-Version must be one of ${versions}`,
      headers: { 'Sec-WebSocket-Version': versions },
    };
  }
  return undefined;
}

/** What {@link closeWebSockets} needs of a connection (ws's WebSocket has it). */
export interface ClosableSocket {
  close(code: number, reason: string): void;
  terminate(): void;
  once(event: 'close', listener: () => void): unknown;
}

/**
 * Closes every socket with `code` and `reason` (1001, "going away": reconnect elsewhere), waits up to
 * `graceMs` for their close frames, and terminates whichever did not answer in time, so a stop is
 * bounded even by a client that never reads.
 */
export async function closeWebSockets(
  sockets: Iterable<ClosableSocket>,
  options: { code?: number; reason: string; graceMs?: number },
): Promise<void> {
  const { code = 1001, reason, graceMs = 1000 } = options;
  const open = [...sockets];
  const closed = open.map((socket) => new Promise<void>((resolve) => socket.once('close', resolve)));
  for (const socket of open) socket.close(code, reason);
  let timer: NodeJS.Timeout | undefined;
  const grace = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, graceMs);
  });
  await Promise.race([Promise.all(closed), grace]);
  clearTimeout(timer);
  for (const socket of open) socket.terminate();
}
