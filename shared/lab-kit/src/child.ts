/**
 * A lab's worker in a process of its own: the one a spec kills with SIGKILL mid-batch, and the several
 * a load script runs. The parent starts it with {@link startChild}; the child, once it works, calls
 * {@link serveParent}. They talk over Node's IPC channel:
 *
 *   child  -> { type: 'ready' }                   once it works (startChild resolves then)
 *   parent -> { type, id, input }                 a request: the child's handler for `type` answers
 *   child  -> { type: 'reply', id, value | error }
 *   parent -> { type: 'stop' }                    the child runs its `stop` handler and exits 0
 *
 * A child whose parent goes away (a test run stopped, a load script that crashed) exits at once, as a
 * crash would: nobody is left to wait for a clean stop. A parent that exits SIGKILLs its children.
 *
 * Imported as `@labs/lab-kit/child`: a worker process loads this file alone, not Express and the rest.
 */
import { type ChildProcess, fork } from 'node:child_process';

/** How a child ended: the signal that killed it, else its exit code. */
export type ChildExit = NodeJS.Signals | number | null;

/** How to start a child. */
export interface StartChildOptions {
  /** What it is called in messages (default "the child process"). */
  name?: string;
  /** Node's flags for it (`--conditions=lab-solution`, say); none of this process's are passed on. */
  execArgv?: string[];
  /** Added to this process's environment. */
  env?: NodeJS.ProcessEnv;
  /** Handed to the child as JSON; it reads it with {@link childInput}. */
  input?: unknown;
  cwd?: string;
  /** How long it may take to say it is ready (default 20 s); then it is killed. */
  readyTimeoutMs?: number;
}

/** A child process that said it is ready. Disposing it SIGKILLs it. */
export interface LabChild extends AsyncDisposable {
  readonly child: ChildProcess;
  /** How it ended, once it has. */
  readonly exited: Promise<ChildExit>;
  /** Asks its handler for `type`; rejects with the handler's error, or when the child has exited. */
  ask<T = unknown>(type: string, input?: unknown): Promise<T>;
  /** Sends `signal` (default SIGKILL: no clean-up at all) and waits; SIGKILL after `graceMs`. */
  kill(signal?: NodeJS.Signals, graceMs?: number): Promise<ChildExit>;
  /** Asks it to stop cleanly (its `stop` handler) and waits for it to exit; SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<ChildExit>;
  /** The end of what it wrote to stderr (its log), for a failure message. */
  stderr(): string;
}

const INPUT_VARIABLE = 'LABS_CHILD_INPUT';

/**
 * `lab mutate` reaches into children too. Stryker's instrumented code switches a mutant on when the
 * process's `__stryker__.activeMutant` names it, and in a process of its own reads that from
 * `__STRYKER_ACTIVE_MUTANT__`; it counts the mutants a test reached in `__stryker__.mutantCoverage`,
 * which only the test's own process reports. So a child starts with its parent's active mutant, and
 * sends what it reached (`{ type: 'mutant-coverage' }`) before each message and every quarter second;
 * the parent counts it under the test that is running. Without Stryker, none of this happens.
 */
interface StrykerCoverage {
  static: Record<string, number>;
  perTest: Record<string, Record<string, number>>;
}
interface Stryker {
  activeMutant?: string;
  currentTestId?: string;
  mutantCoverage?: StrykerCoverage;
}
const stryker = () => (globalThis as { __stryker__?: Stryker }).__stryker__;
const ACTIVE_MUTANT_VARIABLE = '__STRYKER_ACTIVE_MUTANT__';

/** In the parent: counts a child's coverage as the running test's (or as static, between tests). */
function countChildCoverage(mutants: Record<string, number>) {
  const ns = stryker();
  if (!ns) return;
  ns.mutantCoverage ??= { static: {}, perTest: {} };
  const coverage = ns.mutantCoverage;
  if (ns.currentTestId) coverage.perTest[ns.currentTestId] ??= {};
  const counts = ns.currentTestId ? coverage.perTest[ns.currentTestId]! : coverage.static;
  for (const [id, n] of Object.entries(mutants)) counts[id] = (counts[id] ?? 0) + n;
}

/** In the child: what it reached since the last call, moved out of its own counts. */
function takeOwnCoverage(): Record<string, number> | undefined {
  const coverage = stryker()?.mutantCoverage;
  if (!coverage) return undefined;
  const taken: Record<string, number> = {};
  // Emptied in place: the instrumented code holds on to these objects, not to `mutantCoverage`.
  for (const counts of [coverage.static, ...Object.values(coverage.perTest)])
    for (const id of Object.keys(counts)) {
      taken[id] = (taken[id] ?? 0) + counts[id]!;
      delete counts[id];
    }
  return Object.keys(taken).length > 0 ? taken : undefined;
}

/**
 * Starts `entry` (a .ts or .js file) in a child Node process and resolves once it calls
 * {@link serveParent}; rejects, with the end of its stderr, when it exits or times out first.
 *
 * @example
 * await using worker = await startChild(fileURLToPath(new URL('./worker.ts', import.meta.url)), {
 *   name: 'the worker', input: { queue }, execArgv: ['--conditions=lab-solution'],
 * });
 * const stats = await worker.ask<Stats>('stats');
 * await worker.kill(); // SIGKILL mid-batch
 */
export async function startChild(entry: string, options: StartChildOptions = {}): Promise<LabChild> {
  const name = options.name ?? 'the child process';
  const timeoutMs = options.readyTimeoutMs ?? 20_000;
  const input = options.input === undefined ? undefined : JSON.stringify(options.input);
  const child = fork(entry, [], {
    cwd: options.cwd,
    execArgv: options.execArgv ?? [],
    env: {
      ...process.env,
      ...options.env,
      [INPUT_VARIABLE]: input,
      ...(stryker()?.activeMutant === undefined ? {} : { [ACTIVE_MUTANT_VARIABLE]: String(stryker()!.activeMutant) }),
    },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  child.on('message', (m: { type?: string; mutants?: Record<string, number> }) => {
    if (m?.type === 'mutant-coverage' && m.mutants) countChildCoverage(m.mutants);
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const exited = new Promise<ChildExit>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));

  const running = () => child.exitCode === null && child.signalCode === null;
  const waitOrKill = async (graceMs: number) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const how = await exited;
    clearTimeout(timer);
    return how;
  };
  const kill = (signal: NodeJS.Signals = 'SIGKILL', graceMs = 15_000) => {
    if (running()) child.kill(signal);
    return waitOrKill(graceMs);
  };
  let lastId = 0;
  const ask = <T>(type: string, request?: unknown) =>
    new Promise<T>((resolve, reject) => {
      if (!running() || !child.connected) return reject(new Error(`${name} has exited`));
      const id = ++lastId;
      const done = () => {
        child.off('message', onReply);
        child.off('exit', onExit);
      };
      const onReply = (m: { type?: string; id?: number; value?: T; error?: string }) => {
        if (m?.type !== 'reply' || m.id !== id) return;
        done();
        if (m.error === undefined) resolve(m.value as T);
        else reject(new Error(`${name}: ${m.error}`));
      };
      const onExit = () => {
        done();
        reject(new Error(`${name} has exited`));
      };
      child.on('message', onReply);
      child.once('exit', onExit);
      child.send({ type, id, input: request }, (error) => error && onExit());
    });

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} was not ready within ${timeoutMs} ms`)), timeoutMs);
      child.on('message', (m: { type?: string }) => {
        if (m?.type !== 'ready') return;
        clearTimeout(timer);
        resolve();
      });
      void exited.then((how) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited (${how}) before it was ready`));
      });
    });
  } catch (error) {
    await kill();
    throw new Error(`${(error as Error).message}:\n${stderr.trim()}`);
  }
  return {
    child,
    exited,
    ask,
    kill,
    stop(graceMs = 15_000) {
      if (running() && child.connected) child.send({ type: 'stop' });
      return waitOrKill(graceMs);
    },
    stderr: () => stderr.trim(),
    [Symbol.asyncDispose]: async () => {
      await kill();
    },
  };
}

/** In a process {@link startChild} started: the `input` it was given; undefined when run by hand. */
export function childInput<T>(): T | undefined {
  const raw = process.env[INPUT_VARIABLE];
  return raw === undefined ? undefined : (JSON.parse(raw) as T);
}

/** What a child answers: a handler per request type, and how it stops cleanly. */
export type ParentHandlers = { stop(): unknown } & Record<string, (input?: unknown) => unknown>;

/**
 * In the child, once it works: tells the parent it is ready, then answers its requests with `handlers`
 * (several at once: a `release` may be what lets a pending `stop` finish). After `stop` the process
 * exits 0 (1 when stopping threw), and when the parent goes away it exits 1. Run by hand, without a
 * parent, it does nothing.
 */
export function serveParent(handlers: ParentHandlers): void {
  const sendOnly = process.send?.bind(process);
  if (!sendOnly) return;
  /** Sends what this process reached; resolves once the message has left (or there was none). */
  const sendCoverage = () =>
    new Promise<void>((resolve) => {
      const mutants = takeOwnCoverage();
      if (mutants && process.connected) sendOnly({ type: 'mutant-coverage', mutants }, undefined, {}, () => resolve());
      else resolve();
    });
  const send = (message: object) => {
    void sendCoverage();
    sendOnly(message);
  };
  if (stryker()) {
    setInterval(() => void sendCoverage(), 250).unref();
    // A child that ends itself (its own SIGTERM handler calling process.exit) has no time to wait for
    // a message to leave. One small message on an idle IPC socket is written at once, so this still
    // reports the shutdown path; a busier channel may lose it, and then Stryker only misses coverage.
    process.once('exit', () => {
      const mutants = takeOwnCoverage();
      if (mutants && process.connected) sendOnly({ type: 'mutant-coverage', mutants });
    });
  }
  process.on('message', async (message: { type: string; id?: number; input?: unknown }) => {
    if (message.type === 'stop') {
      const failed = await Promise.resolve(handlers.stop()).then(
        () => false,
        (error: unknown) => {
          process.stderr.write(`stopping failed: ${(error as Error).message}\n`);
          return true;
        },
      );
      // Waited for: an IPC message still queued when the process exits is lost, and with it the
      // coverage of the stop path, so Stryker would never run the tests that stop a worker against
      // a mutant of it.
      await sendCoverage();
      process.exit(failed ? 1 : 0);
    }
    const handler = handlers[message.type];
    try {
      if (!handler) throw new Error(`no handler for "${message.type}"`);
      send({ type: 'reply', id: message.id, value: await handler(message.input) });
    } catch (error) {
      send({ type: 'reply', id: message.id, error: (error as Error).message });
    }
  });
  process.on('disconnect', () => process.exit(1));
  send({ type: 'ready' });
}
