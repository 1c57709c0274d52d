/**
 * A TCP proxy in front of a real Redis that can forget the scripts it was given, as a restarted Redis
 * does. Redis keeps scripts (EVAL, SCRIPT LOAD) in a cache in memory, not in the data: a restart, a
 * failover to a replica or a `SCRIPT FLUSH` empties it, and every `EVALSHA` of a script not sent whole
 * since is answered `NOSCRIPT`. A client has to send the script again (ioredis's `defineCommand` does:
 * it sends the whole script on every new connection, and again on NOSCRIPT).
 *
 * The spec's Redis is shared with every other lab's tests, so the spec cannot flush its script cache
 * (that would change what other labs' tests count). The proxy plays the empty cache for the connections
 * through it instead: after forgetScripts(), an EVALSHA whose script has not passed whole through it
 * since reaches Redis with its SHA1 replaced by one no script has, and Redis's own NOSCRIPT comes back.
 *
 * It reads just enough of RESP (a command is an array of bulk strings) to find each command's name and
 * arguments; everything else passes as it came, in order.
 */
import { createHash } from 'node:crypto';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';

export interface ScriptCacheProxy extends AsyncDisposable {
  /** `redisUrl` with its host and port replaced by the proxy's. */
  readonly url: string;
  /** From now on Redis seems to have no script, until one is sent whole again (EVAL or SCRIPT LOAD). */
  forgetScripts(): void;
  /** EVALSHA commands sent on to Redis with an unknown SHA1 (answered NOSCRIPT) since forgetScripts(). */
  readonly noscripts: number;
}

/** A SHA1 no script has: Redis answers an EVALSHA of it with NOSCRIPT. */
const UNKNOWN_SHA = Buffer.from('0'.repeat(40));

/** One command read off the stream: where it lies in the buffer, and where each argument lies. */
interface Parsed {
  end: number;
  args: { start: number; end: number }[];
}

const CR = 13;

/** Reads "<digits>\r\n" at `at` (after a one-byte type marker); undefined if the line is incomplete. */
function lengthLine(buffer: Buffer, at: number): { value: number; next: number } | undefined {
  const eol = buffer.indexOf(CR, at);
  if (eol === -1 || eol + 1 >= buffer.length) return undefined;
  return { value: Number(buffer.toString('latin1', at + 1, eol)), next: eol + 2 };
}

/** The command that starts at `at`, or undefined if it has not all arrived. An inline command (a line) has no args here. */
function parseCommand(buffer: Buffer, at: number): Parsed | undefined {
  if (buffer[at] !== 0x2a /* '*' */) {
    const eol = buffer.indexOf('\n', at);
    return eol === -1 ? undefined : { end: eol + 1, args: [] };
  }
  const count = lengthLine(buffer, at);
  if (count === undefined) return undefined;
  const args: Parsed['args'] = [];
  let next = count.next;
  for (let i = 0; i < count.value; i++) {
    const length = lengthLine(buffer, next);
    if (length === undefined || length.next + length.value + 2 > buffer.length) return undefined;
    args.push({ start: length.next, end: length.next + length.value });
    next = length.next + length.value + 2;
  }
  return { end: next, args };
}

/** Starts the proxy on 127.0.0.1 (a free port) in front of the Redis `redisUrl` names. */
export async function scriptCacheProxy(redisUrl: string): Promise<ScriptCacheProxy> {
  const target = new URL(redisUrl);
  const sockets = new Set<Socket>();
  /** SHA1s of the scripts sent whole since forgetScripts(); undefined while nothing is forgotten. */
  let known: Set<string> | undefined;
  let noscripts = 0;
  const sha1 = (script: Buffer) => createHash('sha1').update(script).digest('hex');

  /** Looks at one whole command (`bytes`, its args located in it) and changes its SHA1 if Redis should not know it. */
  const inspect = (bytes: Buffer, args: Parsed['args']) => {
    if (known === undefined || args.length < 2) return;
    const arg = (i: number) => bytes.subarray(args[i]!.start, args[i]!.end);
    const name = arg(0).toString('latin1').toLowerCase();
    if (name === 'eval' || name === 'eval_ro') known.add(sha1(arg(1)));
    else if (name === 'script' && arg(1).toString('latin1').toLowerCase() === 'load' && args.length > 2)
      known.add(sha1(arg(2)));
    else if ((name === 'evalsha' || name === 'evalsha_ro') && !known.has(arg(1).toString('latin1').toLowerCase())) {
      noscripts += 1;
      if (arg(1).length === UNKNOWN_SHA.length) UNKNOWN_SHA.copy(bytes, args[1]!.start);
    }
  };

  const server = createServer((client) => {
    const upstream = connect(Number(target.port) || 6379, target.hostname || '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {}); // the other side's close follows
      socket.on('close', () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    let pending: Buffer = Buffer.alloc(0);
    client.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      let at = 0;
      for (let command = parseCommand(pending, at); command; command = parseCommand(pending, at)) {
        // Rebased on a copy, so a SHA1 replaced here never touches a buffer someone else holds.
        const bytes = Buffer.from(pending.subarray(at, command.end));
        inspect(
          bytes,
          command.args.map(({ start, end }) => ({ start: start - at, end: end - at })),
        );
        upstream.write(bytes);
        at = command.end;
      }
      pending = pending.subarray(at);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const url = new URL(redisUrl);
  url.host = `127.0.0.1:${port}`;
  return {
    url: url.toString(),
    forgetScripts() {
      known = new Set();
      noscripts = 0;
    },
    get noscripts() {
      return noscripts;
    },
    async [Symbol.asyncDispose]() {
      const closed = new Promise((resolve) => server.close(resolve));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
