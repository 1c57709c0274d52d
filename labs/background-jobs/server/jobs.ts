/**
 * The contract between the lab's plumbing and the learner's file (src/job-queue.ts): what a job is,
 * how it travels as bytes, which queues exist, and the two objects the file builds (a publisher for
 * the API, a worker for the background). The learner reads this file; they do not edit it.
 */
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { z } from '@labs/lab-kit';

/** The routing key every confirmation job is published with (and bound with). */
export const JOB_ROUTING_KEY = 'order.confirmation';

/** The headers a dead-lettered job must carry, so whoever looks at the dead-letter queue knows why. */
export const DEAD_LETTER_HEADERS = {
  /** The message of the error the last attempt failed with. */
  error: 'x-error',
  /** How many times the job was tried before it was given up. */
  attempts: 'x-attempts',
} as const;

const orderItem = z.object({
  sku: z.string().regex(/^[a-z0-9-]{1,40}$/, 'a product code: 1-40 characters from a-z, 0-9 and -'),
  quantity: z.number().int().min(1).max(99),
});

/** The body of POST /orders. */
export const orderInput = z.object({
  email: z.email().max(254),
  items: z.array(orderItem).min(1).max(50),
});

export type Order = z.infer<typeof orderInput>;

/** A job: "send the confirmation of this order". `jobId` is its identity, the idempotency key. */
export const confirmationJob = orderInput.extend({
  jobId: z.uuid(),
  orderId: z.uuid(),
  /** When the API accepted it (ISO 8601): the load script measures latency from here. */
  enqueuedAt: z.iso.datetime(),
});
export type ConfirmationJob = z.infer<typeof confirmationJob>;

/** The job for an order just accepted: new ids, enqueued now. */
export function newJob(order: Order): ConfirmationJob {
  return { ...order, jobId: randomUUID(), orderId: randomUUID(), enqueuedAt: new Date().toISOString() };
}

/** A message body that is not a job (a bug in some producer): retrying it can never help. */
export class MalformedJobError extends Error {
  override readonly name = 'MalformedJobError';
}

/** A job as a message body (JSON). */
export function encodeJob(job: ConfirmationJob): Buffer {
  return Buffer.from(JSON.stringify(job));
}

/** A message body as a job; throws a MalformedJobError when it is not one. */
export function decodeJob(content: Buffer): ConfirmationJob {
  let value: unknown;
  try {
    value = JSON.parse(content.toString('utf8'));
  } catch {
    throw new MalformedJobError('the message body is not JSON');
  }
  const parsed = confirmationJob.safeParse(value);
  if (!parsed.success) throw new MalformedJobError(`not a confirmation job: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

/**
 * Every name the job queue uses. Tests and the load script give each run its own names (and delete
 * them afterwards), so the learner's code must never hard-code one.
 */
export interface JobQueueNames {
  /** A direct exchange the API publishes jobs to (routing key JOB_ROUTING_KEY). */
  exchange: string;
  /** The work queue, bound to `exchange` with JOB_ROUTING_KEY: where workers consume. */
  queue: string;
  /** One retry queue per delay step, in the order of `retryDelaysMs` (free to use or not). */
  retryQueues: string[];
  /** The dead-letter queue: jobs given up on, with DEAD_LETTER_HEADERS. */
  deadQueue: string;
}

/** The names of one job queue, each made by `name` from a short part ('jobs', 'jobs.dead', ...). */
export function jobQueueNames(name: (part: string) => string, retryDelaysMs: readonly number[]): JobQueueNames {
  return {
    exchange: name('jobs'),
    queue: name('jobs'),
    retryQueues: retryDelaysMs.map((delay) => name(`jobs.retry.${delay}ms`)),
    deadQueue: name('jobs.dead'),
  };
}

/** What the publisher and the worker are built from. */
export interface QueueSettings {
  /** The broker, e.g. amqp://guest:guest@127.0.0.1:5672 (a test may put a proxy in between). */
  url: string;
  names: JobQueueNames;
  /** Deliveries a worker may hold unacknowledged at once (basic.qos). */
  prefetch: number;
  /** The delay before each retry, growing: [50, 100, 200] means 4 attempts in all. */
  retryDelaysMs: number[];
  /** The longest a publish may wait for the broker's confirmation, reconnects included. */
  publishTimeoutMs: number;
  /** Where to say what went wrong (a lost connection, a retry); never throws. */
  log(message: string): void;
}

/** Puts jobs on the queue for the API. */
export interface JobPublisher {
  /** Resolves once the job is safely with the broker; rejects when it cannot say so. */
  publish(job: ConfirmationJob): Promise<void>;
  close(): Promise<void>;
}

/** Sends the confirmation of `job` through `db`; the row it writes is the side effect tests count. */
export type SendConfirmation = (db: pg.Pool | pg.PoolClient, job: ConfirmationJob) => Promise<void>;

/** What a worker is given besides its settings. */
export interface WorkerDeps {
  /** The database of the side effect (and of anything the worker wants to remember). */
  db: pg.Pool;
  /** The work: renders the confirmation (a few ms), then records it. Throws for a poison job. */
  sendConfirmation: SendConfirmation;
}

/** A running worker. */
export interface JobWorker {
  /** Stops taking jobs, lets the ones in progress finish, then closes. */
  stop(): Promise<void>;
}

/** What src/job-queue.ts (and solution/job-queue.ts) export. */
export interface JobQueueModule {
  createPublisher(settings: QueueSettings): Promise<JobPublisher>;
  startWorker(settings: QueueSettings, deps: WorkerDeps): Promise<JobWorker>;
}
