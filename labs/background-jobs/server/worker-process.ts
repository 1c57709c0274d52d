/**
 * One worker in a process of its own: the process the spec kills with SIGKILL mid-batch, and the one
 * the load script runs. forkWorker() (worker-child.ts) starts it and talks to it over IPC:
 *
 *   parent -> { type: 'start', ... }   child -> { type: 'ready' } once it consumes, or { type: 'error' }
 *   parent -> { type: 'stats', id }    child -> { type: 'stats', id, stats }
 *   parent -> { type: 'release' }      the calls held by `hangAfter` go on
 *   parent -> { type: 'stop' }         child stops gracefully (worker.stop()) and exits 0
 *
 * Which implementation runs: the lab's wrong fix under test (LAB_WRONG_FIX, as the spec's vitest config
 * does it), else the module the parent names (the load script compares two), else `#job-queue` as
 * Node resolves it (the parent adds --conditions=lab-solution for the solution).
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type pg from 'pg';
import { atMostEvery } from '@labs/lab-kit';
import { createPgPool } from '@labs/services';
import { type ConfirmationSender, createConfirmationSender, DATABASE_POOL_OPTIONS } from './confirmations.ts';
import type { JobQueueModule, JobWorker, QueueSettings } from './jobs.ts';

/** What the parent sends to start the worker. */
export interface StartWorkerMessage {
  type: 'start';
  settings: Omit<QueueSettings, 'log'>;
  databaseUrl: string;
  workMs: number;
  hangAfter?: number;
  hangAfterEffectToo?: boolean;
  /** An absolute path to a module implementing JobQueueModule. */
  module?: string;
  /**
   * Database connections the worker may hold (default 10). Each job in progress holds one, so the
   * load script's prefetch sweep raises it with the prefetch: otherwise the pool, not prefetch, caps it.
   */
  poolSize?: number;
}

const labDir = resolve(import.meta.dirname, '..');

async function loadImplementation(modulePath: string | undefined): Promise<JobQueueModule> {
  const wrongFix = process.env.LAB_WRONG_FIX;
  if (wrongFix) return (await import(pathToFileURL(resolve(labDir, wrongFix)).href)) as JobQueueModule;
  if (modulePath) return (await import(pathToFileURL(modulePath).href)) as JobQueueModule;
  return await import('#job-queue');
}

const send = (message: unknown) => process.send?.(message);
if (!process.send) throw new Error('worker-process.ts is started by forkWorker() (server/worker-child.ts)');

let worker: JobWorker | undefined;
let sender: ConfirmationSender | undefined;
let pool: pg.Pool | undefined;

type ParentMessage = StartWorkerMessage | { type: 'stats'; id: number } | { type: 'release' } | { type: 'stop' };

process.on('message', async (message: ParentMessage) => {
  try {
    if (message.type === 'start') {
      const implementation = await loadImplementation(message.module);
      // The same timeouts as the API's pool: a stalled database fails a job (given back) instead of hanging it.
      const log = (line: string) => process.stderr.write(`[worker ${process.pid}] ${line}\n`);
      // A connection that dies (even mid-transaction) fails its job, which goes back to the queue; it
      // must not kill the process: createPgPool gives every client an error listener, this one logs.
      const connectionLost = atMostEvery(5000, (error: Error) => log(`a database connection failed: ${error.message}`));
      const max = message.poolSize ?? 10;
      pool = createPgPool(message.databaseUrl, { ...DATABASE_POOL_OPTIONS, max }, connectionLost);
      sender = createConfirmationSender({
        workMs: message.workMs,
        hangAfter: message.hangAfter,
        hangAfterEffectToo: message.hangAfterEffectToo,
      });
      worker = await implementation.startWorker(
        { ...message.settings, log },
        { db: pool, sendConfirmation: sender.send },
      );
      send({ type: 'ready' });
    } else if (message.type === 'stats') {
      send({ type: 'stats', id: message.id, stats: sender?.stats });
    } else if (message.type === 'release') {
      sender?.releaseHeld();
    } else if (message.type === 'stop') {
      await worker?.stop();
      await pool?.end();
      process.exit(0);
    }
  } catch (error) {
    send({ type: 'error', message: (error as Error).message });
    process.exit(1);
  }
});
// Without its parent (a test run stopped, a crashed load script) a worker must not live on.
process.on('disconnect', () => process.exit(1));
