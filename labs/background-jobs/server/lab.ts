/**
 * The background-jobs lab, described once: `lab serve`, the spec and the load script all start it from
 * here. It builds the API (POST /orders queues a job) around the learner's publisher, and, unless told
 * not to, runs one of the learner's workers in the same process.
 */
import type pg from 'pg';
import * as jobQueue from '#job-queue';
import { defineLab, wholeNumber, z } from '@labs/lab-kit';
import { resolveService } from '@labs/services';
import { createApp } from './app.ts';
import { openBrokerAdmin } from './broker.ts';
import { CATALOGUE, createConfirmationSender, DATABASE_POOL_OPTIONS, migrate } from './confirmations.ts';
import { type JobQueueModule, type JobQueueNames, jobQueueNames, type QueueSettings } from './jobs.ts';

export { DATABASE_POOL_OPTIONS };

/** A comma-separated list of delays in ms, e.g. "500,2000,8000": one retry per entry, up to 10. */
const delayList = (fallback: number[]) =>
  z
    .string()
    .optional()
    .transform((raw) =>
      raw?.trim() ? raw.split(',').map((part) => (/^\s*\d+\s*$/.test(part) ? Number(part) : NaN)) : fallback,
    )
    .pipe(
      z
        .array(z.number('each delay must be a whole number of ms, from 1 to 99999999').int().min(1).max(99_999_999))
        .max(10),
    );

const config = z.object({
  JOB_PREFETCH: wholeNumber({ fallback: 30, min: 1, max: 65_535 }),
  JOB_RETRY_DELAYS_MS: delayList([500, 2000, 8000]),
  JOB_WORK_MS: wholeNumber({ fallback: 2, min: 0, max: 60_000 }),
  JOB_PUBLISH_TIMEOUT_MS: wholeNumber({ fallback: 5000, min: 100, max: 120_000 }),
});
/** What a spec or load script may set instead of the configuration. */
export interface BackgroundJobsLabOptions
  extends Pick<QueueSettings, 'prefetch' | 'retryDelaysMs' | 'publishTimeoutMs'> {
  /** The queues to use (the caller's, which it deletes); default: this start's own, deleted on close. */
  names: JobQueueNames;
  /** The database; default: this start's own, with DATABASE_POOL_OPTIONS. */
  db: pg.Pool;
  /** The broker URL of the publisher and the worker (a test's proxy, say); default: the resolved one. */
  amqpUrl: string;
  /** Run a worker in this process too (default true). */
  worker: boolean;
  workMs: number;
  /** The implementation (the load script compares two); default: the exercise, `#job-queue`. */
  implementation: JobQueueModule;
  /** Where the publisher, worker and API report problems; default: the console. */
  log: (message: string) => void;
}

export default defineLab({
  config,
  async build(context, options: Partial<BackgroundJobsLabOptions>) {
    const log = options.log ?? ((message: string) => console.error(`[background-jobs] ${message}`));
    const db = options.db ?? (await context.database(DATABASE_POOL_OPTIONS));
    await migrate(db);
    const url = options.amqpUrl ?? (await resolveService('rabbitmq')).url;
    const retryDelaysMs = options.retryDelaysMs ?? context.config.JOB_RETRY_DELAYS_MS;
    // The caller's queues, or this start's own (per target for `lab serve`, so the starter's and the
    // solution's queues, declared with different arguments, never meet), deleted when it stops.
    const base = `${context.prefix}${context.purpose === 'serve' ? `${context.target}.` : ''}`;
    const names = options.names ?? jobQueueNames((part) => `${base}${part}`, retryDelaysMs);
    if (!options.names) {
      context.onClose(async () => {
        await using admin = await openBrokerAdmin((await resolveService('rabbitmq')).url);
        await admin.deleteJobQueue(names);
      });
    }
    const settings: QueueSettings = {
      url,
      names,
      prefetch: options.prefetch ?? context.config.JOB_PREFETCH,
      retryDelaysMs,
      publishTimeoutMs: options.publishTimeoutMs ?? context.config.JOB_PUBLISH_TIMEOUT_MS,
      log,
    };
    const implementation = options.implementation ?? jobQueue;
    const publisher = await implementation.createPublisher(settings);
    context.onClose(() => publisher.close());
    if (options.worker ?? true) {
      const sender = createConfirmationSender({ workMs: options.workMs ?? context.config.JOB_WORK_MS });
      const worker = await implementation.startWorker(settings, { db, sendConfirmation: sender.send });
      context.onClose(() => worker.stop());
    }
    const app = createApp({ publisher, db, log });
    return {
      app,
      usage: (base) => [
        `Queues: ${names.queue} (retries: ${settings.retryDelaysMs.join('/')} ms; dead letters: ${names.deadQueue})`,
        `Order: curl -si ${base}/orders -H 'content-type: application/json' -d '{"email":"ada@example.com","items":[{"sku":"mug","quantity":2}]}'`,
        `       add -H 'Idempotency-Key: order-42' to make a retry of it (after a 503) the same order`,
        `Job:   curl -s ${base}/jobs/<jobId from the answer>      (products: ${Object.keys(CATALOGUE).join(', ')})`,
        `Poison: the same order with "sku":"gone" fails every attempt; see it: rabbitmqctl list_queues name messages`,
        `Stats: curl -s ${base}/stats`,
      ],
    };
  },
});
