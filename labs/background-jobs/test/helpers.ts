/**
 * What the spec needs besides the lab: jobs to publish, a look into a queue, and a bounded wait for a
 * condition. (Jobs are published with the broker admin's publishJobs, confirmed, so a test knows they
 * are in the queue whatever the learner's publisher does.)
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import amqp, { type GetMessage } from 'amqplib';
import { type ConfirmationJob, newJob } from '../server/jobs.ts';

/** A valid job for one mug; `items` or `email` may be replaced. */
export function makeJob(overrides: Partial<Pick<ConfirmationJob, 'items' | 'email'>> = {}): ConfirmationJob {
  return newJob({ email: 'ada@example.com', items: [{ sku: 'mug', quantity: 1 }], ...overrides });
}

/** `count` fresh jobs. */
export const makeJobs = (count: number) => Array.from({ length: count }, () => makeJob());

/**
 * Takes every message waiting in `queue` (ready ones; unacked ones stay where they are); none when the
 * queue does not exist (a version that never declared it), which the broker answers by closing the
 * channel with a 404.
 */
export async function takeAll(url: string, queue: string): Promise<GetMessage[]> {
  const connection = await amqp.connect(url);
  try {
    const channel = await connection.createChannel();
    channel.on('error', () => {}); // the 404 of a missing queue: the get below rejects with it too
    const messages: GetMessage[] = [];
    for (;;) {
      const message = await channel.get(queue, { noAck: true }).catch((error: Error) => {
        if (/NOT_FOUND/.test(error.message)) return false as const;
        throw error;
      });
      if (message === false) return messages;
      messages.push(message);
    }
  } finally {
    await connection.close();
  }
}

/** How a wait ends. */
export interface WaitOptions {
  /** Give up after this long (the condition was never met). */
  timeoutMs: number;
  pollMs?: number;
}

/**
 * Polls `read` until `done(value)` holds or `timeoutMs` passes; returns the last value either way, so
 * the test's assertion says what was seen. There is no "nothing changed for a while" exit on purpose:
 * a busy machine can be quiet for seconds while a right version is still at work.
 */
export async function waitFor<T>(
  read: () => Promise<T> | T,
  done: (value: T) => boolean,
  options: WaitOptions,
): Promise<T> {
  const { timeoutMs, pollMs = 20 } = options;
  const started = performance.now();
  let value = await read();
  while (!done(value) && performance.now() - started < timeoutMs) {
    await sleep(pollMs);
    value = await read();
  }
  return value;
}

/**
 * Polls `read` until its value has stayed the same for `steadyMs`, or `timeoutMs` passes; returns the
 * last value. For a count that grows and must level off rather than reach a goal (the bytes a process
 * holds while nothing drains them): a wait that ends early reads it before it has grown further, so a
 * version whose count levels off cannot fail by it, and one that grows for ever is read at its highest
 * when the time is up.
 */
export async function waitUntilSteady(
  read: () => number,
  options: { steadyMs: number; timeoutMs: number; pollMs?: number },
): Promise<number> {
  const { steadyMs, timeoutMs, pollMs = 50 } = options;
  const started = performance.now();
  let value = read();
  let since = started;
  while (performance.now() - since < steadyMs && performance.now() - started < timeoutMs) {
    await sleep(pollMs);
    const next = read();
    if (next !== value) since = performance.now();
    value = next;
  }
  return value;
}

/** Numbers 0..count-1, for building requests. */
export const range = (count: number) => Array.from({ length: count }, (_, i) => i);
