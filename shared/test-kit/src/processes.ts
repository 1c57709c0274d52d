/**
 * *No process dies*: the invariant that a lab's processes survive every spec. A worker that crashes on
 * a malformed message, an API that leaves a promise rejection unhandled, a child that exits with an
 * error while the test still passes on what the other instances did: each is a production outage the
 * spec's own assertions can miss. The kit watches instead of the spec's author:
 *
 * - the test process itself (where `startLab` runs the API and in-process workers): every unhandled
 *   promise rejection and every uncaught exception, whoever catches it afterwards;
 * - every Node process started from it (`fork`, or `spawn` of `process.execPath`: the lab's worker
 *   processes, found through Node's `child_process` diagnostics channel, so a lab changes nothing): an
 *   exit with a non-zero code or by a signal this process did not send (`child.kill()`), and, when its
 *   stderr is a pipe, anything it prints about an unhandled rejection or an uncaught exception (Node's
 *   own report of a fatal error included);
 * - every worker thread: an uncaught exception in it.
 *
 * An exit the spec causes on purpose is expected: end a child with `child.kill()`, or mark it with
 * {@link expectExit} (a test that SIGKILLs a worker through `process.kill(pid)`, say). Non-Node children
 * (servers the service kit starts, shells) are not the lab's and are not watched.
 */
import type { ChildProcess } from 'node:child_process';
import { subscribe } from 'node:diagnostics_channel';
import { basename } from 'node:path';
import type { Worker } from 'node:worker_threads';

/** Something that broke *no process dies*. */
export interface ProcessIncident {
  /** `pid 123 (node worker.ts)`, `this test process`, `a worker thread`. */
  process: string;
  /** What happened: `exited with code 1`, `printed an unhandled rejection`, ... */
  what: string;
  /** The evidence: the end of its stderr, or the error's stack. */
  detail: string;
}

/** How much of a child's stderr is kept, for the message. */
const STDERR_TAIL = 4000;

/**
 * What a Node process prints when a rejection or an exception went unhandled: Node's own fatal-error
 * report (its `triggerUncaughtException` frame, the `Node.js v26...` line it ends with) and the words
 * a logging handler would use.
 */
export const UNHANDLED_PATTERN =
  /unhandled ?(promise ?)?rejection|uncaught ?exception|triggerUncaughtException|^Node\.js v\d+\.\d+\.\d+$/im;

const incidents: ProcessIncident[] = [];
const expected = new WeakSet<ChildProcess>();
const expectedPids = new Set<number>();
let installed = false;

const firstLines = (text: string, lines = 12) => text.split('\n').slice(0, lines).join('\n');
const stackOf = (error: unknown) =>
  firstLines(error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : String(error));

/** True for a process running Node (what a lab forks or spawns as a worker). */
function isNode(child: ChildProcess): boolean {
  return child.spawnfile === process.execPath || basename(child.spawnfile ?? '') === 'node';
}

function watchChild(child: ChildProcess): void {
  if (!isNode(child)) return;
  // `pid 12 (node worker.ts --fast)`: the script and what follows it, past the inherited Node options.
  const name = () => {
    const args = child.spawnargs.slice(1);
    const script = args.findLastIndex((a) => /\.[cm]?[jt]s$/.test(a) && !a.includes('node_modules'));
    const shown = script === -1 ? args : [basename(args[script]!), ...args.slice(script + 1)];
    return `pid ${child.pid ?? '?'} (node ${shown.join(' ')})`;
  };
  let stderr = '';
  let reported = false;
  child.stderr?.on('data', (chunk: Buffer | string) => {
    stderr = (stderr + chunk.toString()).slice(-STDERR_TAIL);
    if (reported || !UNHANDLED_PATTERN.test(stderr)) return;
    reported = true;
    incidents.push({ process: name(), what: 'printed an unhandled rejection or uncaught exception', detail: stderr });
  });
  // 'close', not 'exit': by then its stderr has been read to the end.
  child.once('close', (code, signal) => {
    if (child.killed || expected.has(child) || (child.pid !== undefined && expectedPids.has(child.pid))) return;
    if (code === 0) return; // finished of its own accord, with success
    incidents.push({
      process: name(),
      what: signal ? `was killed by ${signal}, which the test process did not send` : `exited with code ${code}`,
      detail: stderr.slice(-1500) || '(nothing on stderr, or stderr was not a pipe)',
    });
  });
}

function watchThread(worker: Worker): void {
  worker.on('error', (error) =>
    incidents.push({
      process: `worker thread ${worker.threadId}`,
      what: 'threw an uncaught exception',
      detail: stackOf(error),
    }),
  );
}

/**
 * Starts watching this process, its Node children and its worker threads (once per process; `useLab`
 * calls it). From then on, incidents collect until {@link takeProcessIncidents} takes them.
 *
 * @example
 * // useLab does this for a lab; a spec or fixture that starts processes without it:
 * watchProcesses();
 * const worker = fork('./worker.ts');
 * // ... the test ...
 * expectNoProcessDied(); // throws an InvariantError naming the worker if it crashed
 */
export function watchProcesses(): void {
  if (installed) return;
  installed = true;
  // Published as the ChildProcess is made, before it is spawned: what it runs and its pipes are known
  // once the spawning call has returned, which is before any of its events.
  subscribe('child_process', (message) => {
    const child = (message as { process: ChildProcess }).process;
    queueMicrotask(() => watchChild(child));
  });
  subscribe('worker_threads', (message) => watchThread((message as { worker: Worker }).worker));
  process.on('unhandledRejection', (reason) =>
    incidents.push({
      process: 'this test process',
      what: 'left a promise rejection unhandled',
      detail: stackOf(reason),
    }),
  );
  // A monitor sees the exception before whoever handles it (vitest reports it too), and changes nothing.
  process.on('uncaughtExceptionMonitor', (error) =>
    incidents.push({ process: 'this test process', what: 'threw an uncaught exception', detail: stackOf(error) }),
  );
}

/**
 * Declares that `child` (or the process with that pid) may exit, with any code or signal, from now on:
 * for a test that crashes a worker on purpose other than with `child.kill()`.
 *
 * @example
 * const worker = await startWorker(options);
 * expectExit(worker.child);
 * process.kill(worker.child.pid!, 'SIGKILL'); // a crash, on purpose
 * await worker.exited;
 */
export function expectExit(child: ChildProcess | number): void {
  if (typeof child === 'number') expectedPids.add(child);
  else expected.add(child);
}

/** The incidents recorded since the last call, removed from the record. */
export function takeProcessIncidents(): ProcessIncident[] {
  return incidents.splice(0);
}

/** Describes incidents for an InvariantError's message. */
export function describeIncidents(found: ProcessIncident[]): string {
  const shown = found
    .slice(0, 3)
    .map((i) => `${i.process} ${i.what}:\n${i.detail.trim().replace(/^/gm, '    ')}`)
    .join('\n');
  return (
    `No process dies: ${found.length} incident(s) during this test.\n${shown}` +
    (found.length > 3 ? `\n  ...and ${found.length - 3} more.` : '') +
    '\nHandle the error where it happens (a try around the message handler, a .catch on the promise), or, when a ' +
    'test ends a process on purpose, use child.kill() or expectExit(child).'
  );
}
