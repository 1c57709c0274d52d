/**
 * Runs a lab's servers in a child process, so the load generator and the servers do not share one
 * event loop (on a 2-core machine that sharing would measure the client, not the server).
 *
 * The module must export `start(options)` resolving to `{ urls, stats?, close }`.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** What a servers module's `start` returns. */
export interface ServersHandle {
  urls: Record<string, string>;
  stats?(): Record<string, number> | Promise<Record<string, number>>;
  close(): Promise<void>;
}

/** The parent's view of the child: its URLs, its counters on request, and a way to stop it. */
export interface ForkedServers extends AsyncDisposable {
  urls: Record<string, string>;
  /** The counters the module's stats() returns right now ({} if it has none). */
  stats(): Promise<Record<string, number>>;
  close(): Promise<void>;
}

type Message =
  | { type: 'ready'; urls: Record<string, string> }
  | { type: 'stats'; id: number; stats: Record<string, number> }
  | { type: 'error'; message: string };

const CHILD_ENTRY = fileURLToPath(new URL('./servers-child.ts', import.meta.url));

/** How to fork the servers process. */
export interface ForkOptions {
  /**
   * Variables set for the child on top of this process's environment, e.g. `withDistance(...).env`,
   * which points `DATABASE_URL` or `REDIS_URL` at a latency proxy.
   */
  env?: Record<string, string | undefined>;
}

/**
 * Forks `moduleUrl` (a .ts file, run by Node as it is), calls its start(options), and resolves once it
 * listens. `forkOptions.env` adds to (or overrides) the environment the child inherits.
 */
export async function forkServers(
  moduleUrl: URL,
  options: unknown = {},
  forkOptions: ForkOptions = {},
): Promise<ForkedServers> {
  const child: ChildProcess = fork(CHILD_ENTRY, [fileURLToPath(moduleUrl)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, ...forkOptions.env },
  });
  const urls = await new Promise<Record<string, string>>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the servers process exited (code ${code}) before it was ready`)));
    child.on('message', (m: Message) => {
      if (m.type === 'ready') resolve(m.urls);
      if (m.type === 'error') reject(new Error(m.message));
    });
    child.send({ type: 'start', options });
  });
  child.removeAllListeners('exit');
  // If the parent dies (Ctrl-C, an exception), the child must not outlive it.
  const killChild = () => child.kill('SIGTERM');
  process.once('exit', killChild);

  let nextId = 0;
  const stats = () =>
    new Promise<Record<string, number>>((resolve) => {
      const id = ++nextId;
      const onMessage = (m: Message) => {
        if (m.type === 'stats' && m.id === id) {
          child.off('message', onMessage);
          resolve(m.stats);
        }
      };
      child.on('message', onMessage);
      child.send({ type: 'stats', id });
    });
  const close = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.send({ type: 'close' });
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
    process.off('exit', killChild);
  };
  return { urls, stats, close, [Symbol.asyncDispose]: close };
}
