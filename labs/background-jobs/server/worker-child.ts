/**
 * The parent's side of worker-process.ts: start a worker in a child process (the lab kit's), ask it
 * for its numbers, stop it gracefully, or kill it with SIGKILL (no clean-up of any kind, as a crash or
 * an OOM kill).
 */
import { fileURLToPath } from 'node:url';
import { currentTarget } from '@labs/lab-kit';
import { type LabChild, startChild } from '@labs/lab-kit/child';
import type { SenderStats } from './confirmations.ts';
import type { WorkerInput } from './worker-process.ts';

const ENTRY = fileURLToPath(new URL('./worker-process.ts', import.meta.url));

/** A worker running in a child process. */
export interface WorkerChild extends LabChild {
  /** The child's sender stats (confirmations tried, in flight, ...). */
  stats(): Promise<SenderStats>;
  /** Lets the confirmations held by `hangAfter` go on. */
  release(): void;
  /** What the child wrote to stderr (its log), for a failure message. */
  output(): string;
}

/** Starts a worker process; resolves once it consumes (or rejects with what it said). */
export async function forkWorker(input: WorkerInput): Promise<WorkerChild> {
  // The solution, unless a module is named: the same switch the spec's vitest config makes.
  const solution = !input.module && currentTarget() === 'solution';
  const child = await startChild(ENTRY, {
    name: 'the worker process',
    input,
    execArgv: solution ? ['--conditions=lab-solution'] : [],
  });
  return {
    ...child,
    stats: () => child.ask<SenderStats>('stats'),
    release: () => void child.ask('release').catch(() => undefined),
    output: child.stderr,
  };
}
