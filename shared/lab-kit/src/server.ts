/**
 * Listening and stopping: a server on 127.0.0.1 that closes with its owner, the errors a learner can
 * meet when asking for a port, and the wait for Ctrl-C or a closed terminal.
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * How long a client may take, on every server the kit starts. Node's own defaults are made for a
 * server behind a proxy that has its own: a request may take 300 s to arrive (`requestTimeout`) and
 * its headers 60 s, so a client announcing a 50 MB body and sending 1 KB holds a connection (and the
 * request's memory) for five minutes; a few hundred such clients exhaust a server. A lab's requests
 * are a few kilobytes sent over loopback or a LAN: seconds are generous.
 */
export const SERVER_TIME_LIMITS = {
  /** The request line and headers must have arrived within this (Node's default: 60 s). */
  headersTimeoutMs: 5_000,
  /** The whole request, body included, must have arrived within this (Node's default: 300 s). */
  requestTimeoutMs: 10_000,
  /** An idle keep-alive connection is closed after this (Node's default, said here on purpose). */
  keepAliveTimeoutMs: 5_000,
  /**
   * How often Node checks the two limits above (its default, 30 s, lets a connection outlive its
   * limit by up to that much).
   */
  checkEveryMs: 1_000,
} as const;

/** An HTTP server listening on a loopback port. */
export interface Listening extends AsyncDisposable {
  /** Base URL, e.g. http://127.0.0.1:43121 */
  readonly url: string;
  readonly server: Server;
}

/** Thrown by {@link listen} when the port asked for is taken; its message names a port that is free. */
export class PortInUseError extends Error {
  override readonly name = 'PortInUseError';
  readonly port: number;
  constructor(port: number, free: number | undefined) {
    super(
      `Port ${port} is already in use. Stop what runs there, or use another: ${free ? `--port ${free} (free right now)` : '--port 0 (any free port)'}`,
    );
    this.port = port;
  }
}

/** Thrown by {@link listen} when the system refuses the port (below 1024 without privileges). */
export class PortNotAllowedError extends Error {
  override readonly name = 'PortNotAllowedError';
}

/** True when nothing listens on `port` right now. */
function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

/** The first free port of the ten after `port`, if any. */
async function nextFreePort(port: number): Promise<number | undefined> {
  for (let candidate = port + 1; candidate <= Math.min(port + 10, 65_535); candidate++) {
    if (await isFree(candidate)) return candidate;
  }
  return undefined;
}

/**
 * Starts `app` (an Express app or any request listener) on 127.0.0.1: on a free port by default (tests,
 * load scripts), or on `port` (`lab serve`), with {@link SERVER_TIME_LIMITS}, then calls `attach` with
 * the server. Closed on dispose: `attach`'s before-close step first, then open connections.
 * (Not Express 5's `app.listen(port, cb)`: it calls `cb` on errors too.)
 */
/**
 * What a lab may add to the server its app runs on: an 'upgrade' handler (a WebSocket endpoint is an
 * event of the server, not a request), timers, anything that needs the server itself. It returns the
 * step to run when the server closes, before its connections are cut (close the WebSocket server,
 * stop its heartbeats), if it has one.
 */
export type Attach = (server: Server) => (() => Promise<unknown> | unknown) | undefined;

export async function listen(app: RequestListener, port = 0, attach?: Attach): Promise<Listening> {
  const server = createServer(
    {
      headersTimeout: SERVER_TIME_LIMITS.headersTimeoutMs,
      requestTimeout: SERVER_TIME_LIMITS.requestTimeoutMs,
      keepAliveTimeout: SERVER_TIME_LIMITS.keepAliveTimeoutMs,
      connectionsCheckingInterval: SERVER_TIME_LIMITS.checkEveryMs,
    },
    app,
  );
  const failure = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    server.once('error', resolve);
    server.listen(port, '127.0.0.1', () => resolve(undefined));
  });
  if (failure?.code === 'EADDRINUSE') throw new PortInUseError(port, await nextFreePort(port));
  if (failure?.code === 'EACCES') {
    throw new PortNotAllowedError(
      `Port ${port} needs administrator rights on this system; use one above 1023 (--port 3000).`,
    );
  }
  if (failure) throw failure;
  const { port: actual } = server.address() as AddressInfo;
  const beforeClose = attach?.(server);
  return {
    url: `http://127.0.0.1:${actual}`,
    server,
    async [Symbol.asyncDispose]() {
      await beforeClose?.();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Resolves on Ctrl-C (SIGINT), SIGTERM, or SIGHUP (what closing a terminal window sends), or when
 * the parent process is gone (the command line that started this one was killed): how `lab serve`
 * waits until it is asked to stop, so every way of stopping it cleans up the same way.
 *
 * `parent` is the parent's pid as the process found it at its start: read any later, it may already
 * be the pid of whoever adopted the orphan (the parent killed while this one was starting).
 */
export function untilInterrupted(parent = process.ppid): Promise<NodeJS.Signals> {
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  return new Promise((resolve) => {
    // An orphan is adopted by another process (init, or a subreaper): its parent id changes.
    const watch = setInterval(() => process.ppid !== parent && stop('SIGHUP'), 500);
    const stop = (signal: NodeJS.Signals) => {
      clearInterval(watch);
      for (const s of signals) process.off(s, stop);
      resolve(signal);
    };
    for (const s of signals) process.on(s, stop);
  });
}
