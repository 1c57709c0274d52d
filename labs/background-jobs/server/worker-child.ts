/**
 * The parent's side of worker-process.ts: start a worker in a child process, ask it for its numbers,
 * stop it gracefully, or kill it with SIGKILL (no clean-up of any kind, as a crash or an OOM kill).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { currentTarget } from '@labs/lab-kit';
import type { SenderStats } from './confirmations.ts';
import type { StartWorkerMessage } from './worker-process.ts';

const ENTRY = fileURLToPath(new URL('./worker-process.ts', import.meta.url));

/** A worker running in a child process. */
export interface WorkerChild extends AsyncDisposable {
  readonly pid: number;
  /** The child's sender stats (confirmations tried, in flight, ...). */
  stats(): Promise<SenderStats>;
  /** Lets the confirmations held by `hangAfter` go on. */
  release(): void;
  /** Asks the worker to stop gracefully; resolves when the process has exited. */
  stop(): Promise<void>;
  /** SIGKILL: the process dies on the spot. Resolves when it has. */
  kill(): Promise<void>;
  /** The exit code (null after a signal), once it has exited. */
  readonly exited: Promise<number | null>;
  /** What the child wrote to stderr (its log), for a failure message. */
  output(): string;
}

/** What to start. */
export type ForkWorkerOptions = Omit<StartWorkerMessage, 'type'>;

/** Starts a worker process; resolves once it consumes (or rejects with what it said). */
export async function forkWorker(options: ForkWorkerOptions): Promise<WorkerChild> {
  // The solution, unless a module is named: the same switch the spec's vitest config makes.
  const conditions = !options.module && currentTarget() === 'solution' ? ['--conditions=lab-solution'] : [];
  const child: ChildProcess = fork(ENTRY, [], {
    execArgv: conditions,
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: process.env,
  });
  let output = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));

  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the worker process was not ready within 15 s')), 15_000);
      child.on('message', (m: { type: string; message?: string }) => {
        if (m.type === 'ready') resolve();
        if (m.type === 'error') reject(new Error(`the worker process failed to start: ${m.message}`));
      });
      void exited.then((code) => reject(new Error(`the worker process exited (code ${code}) before it was ready`)));
      child.send({ type: 'start', ...options } satisfies StartWorkerMessage);
      void exited.finally(() => clearTimeout(timer));
    });
  } catch (error) {
    await kill();
    throw new Error(`${(error as Error).message}\n${output}`);
  }

  let nextId = 0;
  const stats = async () => {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error('the worker process has exited');
    const id = ++nextId;
    const reply = new Promise<SenderStats>((resolve, reject) => {
      const onMessage = (m: { type: string; id?: number; stats?: SenderStats }) => {
        if (m.type !== 'stats' || m.id !== id) return;
        child.off('message', onMessage);
        resolve(m.stats as SenderStats);
      };
      child.on('message', onMessage);
      void exited.then(() => reject(new Error('the worker process has exited')));
    });
    child.send({ type: 'stats', id });
    return reply;
  };
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.send({ type: 'stop' });
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  return {
    pid: child.pid ?? 0,
    stats,
    release: () => {
      if (child.connected) child.send({ type: 'release' });
    },
    stop,
    kill,
    exited,
    output: () => output,
    [Symbol.asyncDispose]: kill,
  };
}
