/**
 * One worker in a process of its own: the process the spec kills with SIGKILL mid-batch, and the ones
 * the load script runs. forkWorker() (worker-child.ts) starts it with a WorkerInput, through the lab
 * kit's child processes; it answers `stats` (its sender's numbers) and `release` (the calls held by
 * `hangAfter` go on), and on `stop` stops its worker gracefully and exits.
 *
 * Which implementation runs: the lab's wrong fix under test (LAB_WRONG_FIX, as the spec's vitest config
 * does it), else the module the parent names (the load script compares two), else `#job-queue` as
 * Node resolves it (the parent adds --conditions=lab-solution for the solution).
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { atMostEvery } from '@labs/lab-kit';
import { childInput, serveParent } from '@labs/lab-kit/child';
import { createPgPool } from '@labs/services';
import { createConfirmationSender, DATABASE_POOL_OPTIONS, type SenderOptions } from './confirmations.ts';
import type { JobQueueModule, QueueSettings } from './jobs.ts';

/** What the parent hands the worker. */
export interface WorkerInput extends Pick<SenderOptions, 'workMs' | 'hangAfter' | 'hangAfterEffectToo'> {
  settings: Omit<QueueSettings, 'log'>;
  databaseUrl: string;
  /** An absolute path to a module implementing JobQueueModule. */
  module?: string;
  /**
   * Database connections the worker may hold (default 10). Each job in progress holds one, so the
   * load script's prefetch sweep raises it with the prefetch: otherwise the pool, not prefetch, caps it.
   */
  poolSize?: number;
}

const input = childInput<WorkerInput>();
if (!input) throw new Error('worker-process.ts is started by forkWorker() (server/worker-child.ts)');
const wrongFix = process.env.LAB_WRONG_FIX;
const file = wrongFix ? resolve(import.meta.dirname, '..', wrongFix) : input.module;
const implementation: JobQueueModule = file ? await import(pathToFileURL(file).href) : await import('#job-queue');

const log = (line: string) => process.stderr.write(`[worker ${process.pid}] ${line}\n`);
// The same timeouts as the API's pool: a stalled database fails a job (given back) instead of hanging it.
// A connection that dies (even mid-transaction) fails its job, which goes back to the queue; it must
// not kill the process: createPgPool gives every client an error listener, this one logs.
const pool = createPgPool(
  input.databaseUrl,
  { ...DATABASE_POOL_OPTIONS, max: input.poolSize ?? 10 },
  atMostEvery(5000, (error: Error) => log(`a database connection failed: ${error.message}`)),
);
const sender = createConfirmationSender(input); // its workMs, hangAfter and hangAfterEffectToo
const worker = await implementation.startWorker(
  { ...input.settings, log },
  { db: pool, sendConfirmation: sender.send },
);
serveParent({
  stats: () => sender.stats,
  release: () => sender.releaseHeld(),
  stop: async () => {
    await worker.stop();
    await pool.end();
  },
});
