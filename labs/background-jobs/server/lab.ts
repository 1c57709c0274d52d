/**
 * The background-jobs lab, described once: `lab serve`, the spec and the load script all start it from
 * here. It builds the API (POST /orders queues a job) around the learner's publisher, and, unless told
 * not to, runs one of the learner's workers in the same process.
 *
 * Config: JOB_PREFETCH (default 30), JOB_RETRY_DELAYS_MS (default 500,2000,8000), JOB_WORK_MS
 * (default 2), JOB_PUBLISH_TIMEOUT_MS (default 5000).
 */
import type pg from 'pg';
import * as jobQueue from '#job-queue';
import { defineLab, wholeNumber, z } from '@labs/lab-kit';
import { resolveService } from '@labs/services';
import { createApp } from './app.ts';
import { openBrokerAdmin } from './broker.ts';
import { CATALOGUE, createConfirmationSender, DATABASE_POOL_OPTIONS, migrate } from './confirmations.ts';

export { DATABASE_POOL_OPTIONS };
import { type JobQueueModule, type JobQueueNames, jobQueueNames, type QueueSettings } from './jobs.ts';

/** A comma-separated list of delays in ms, e.g. "500,2000,8000": one retry per entry. */
const delayList = (fallback: number[]) =>
  z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (raw === undefined || raw.trim() === '') return fallback;
      const parts = raw.split(',').map((part) => part.trim());
      const ok = parts.length <= 10 && parts.every((part) => /^\d{1,8}$/.test(part) && Number(part) >= 1);
      if (ok) return parts.map(Number);
      ctx.addIssue({ code: 'custom', message: `must be up to 10 delays in ms from 1, comma-separated, got "${raw}"` });
      return z.NEVER;
    });

const config = z.object({
  JOB_PREFETCH: wholeNumber({ fallback: 30, min: 1, max: 65_535 }),
  JOB_RETRY_DELAYS_MS: delayList([500, 2000, 8000]),
  JOB_WORK_MS: wholeNumber({ fallback: 2, min: 0, max: 60_000 }),
  JOB_PUBLISH_TIMEOUT_MS: wholeNumber({ fallback: 5000, min: 100, max: 120_000 }),
});
type Config = z.infer<typeof config>;

/** What a spec or load script may set instead of the configuration. */
export interface BackgroundJobsLabOptions {
  /** The queues to use (the caller's, which it deletes); default: this start's own, deleted on close. */
  names: JobQueueNames;
  /** The database; default: this start's own, with DATABASE_POOL_OPTIONS. */
  db: pg.Pool;
  /** The broker URL of the publisher and the worker (a test's proxy, say); default: the resolved one. */
  amqpUrl: string;
  /** Run a worker in this process too (default true). */
  worker: boolean;
  prefetch: number;
  retryDelaysMs: number[];
  workMs: number;
  publishTimeoutMs: number;
  /** The implementation (the load script compares two); default: the exercise, `#job-queue`. */
  implementation: JobQueueModule;
  /** Where the publisher, worker and API report problems; default: the console. */
  log: (message: string) => void;
}

export default defineLab<Config, BackgroundJobsLabOptions>({
  config,
  async build(context, options) {
    const log = options.log ?? ((message: string) => console.error(`[background-jobs] ${message}`));
    const db = options.db ?? (await context.database(DATABASE_POOL_OPTIONS));
    await migrate(db);
    const url = options.amqpUrl ?? (await resolveService('rabbitmq')).url;
    const retryDelaysMs = options.retryDelaysMs ?? context.config.JOB_RETRY_DELAYS_MS;
    let names = options.names;
    if (!names) {
      // Queues of this start (per target for `lab serve`, so the starter's and the solution's queues,
      // declared with different arguments, never meet), deleted when it stops.
      const base = `${context.prefix}${context.purpose === 'serve' ? `${context.target}.` : ''}`;
      const own = jobQueueNames((part) => `${base}${part}`, retryDelaysMs);
      const { url: brokerUrl } = await resolveService('rabbitmq');
      context.onClose(async () => {
        await using admin = await openBrokerAdmin(brokerUrl);
        await admin.deleteJobQueue(own);
      });
      names = own;
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
    const products = Object.keys(CATALOGUE).join(', ');
    return {
      app,
      usage: (base) => [
        `Queues: ${names.queue} (retries: ${settings.retryDelaysMs.join('/')} ms; dead letters: ${names.deadQueue})`,
        `Order: curl -si ${base}/orders -H 'content-type: application/json' -d '{"email":"ada@example.com","items":[{"sku":"mug","quantity":2}]}'`,
        `       add -H 'Idempotency-Key: order-42' to make a retry of it (after a 503) the same order`,
        `Job:   curl -s ${base}/jobs/<jobId from the answer>      (products: ${products})`,
        `Poison: the same order with "sku":"gone" fails every attempt; see it: rabbitmqctl list_queues name messages`,
        `Stats: curl -s ${base}/stats`,
      ],
    };
  },
});
