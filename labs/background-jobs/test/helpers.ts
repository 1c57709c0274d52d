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

/** Numbers 0..count-1, for building requests. */
export const range = (count: number) => Array.from({ length: count }, (_, i) => i);
