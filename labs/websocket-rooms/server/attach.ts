/**
 * Finds the HTTP server an app is served by. The lab kit's `listen(app)` creates the server and hands
 * `build` only the request listener, but a WebSocket handshake is an event of the server ('upgrade'),
 * not a request. Node announces every server that starts listening on a diagnostics channel; ours is
 * the one whose 'request' listener is our app. Announced synchronously inside `listen()`, before any
 * connection can arrive, so no upgrade is ever missed.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { type RequestListener, Server } from 'node:http';

const LISTEN = 'tracing:net.server.listen:asyncStart';

/**
 * Calls `onServer` once, with the HTTP server `app` is mounted on, when it starts listening. Returns
 * a function that stops looking (for an app that was never started).
 */
export function whenListening(app: RequestListener, onServer: (server: Server) => void): () => void {
  const onListen = (message: unknown) => {
    const { server } = message as { server?: unknown };
    if (!(server instanceof Server) || !server.listeners('request').includes(app)) return;
    stop();
    onServer(server);
  };
  const stop = () => unsubscribe(LISTEN, onListen);
  subscribe(LISTEN, onListen);
  return stop;
}
