/**
 * What the spec needs around the learner's pipeline: worker processes to kill for real, the consumer
 * group's committed offsets, and waiting for a condition with a bound instead of sleeping.
 */
import { join } from 'node:path';
import type { Admin, Kafka } from 'kafkajs';
import { currentTarget } from '@labs/lab-kit';
import { exerciseAliases } from '@labs/test-kit/vitest';
import { type WorkerOptions, type WorkerProcess, startWorker as startWorkerProcess } from '../server/worker-process.ts';

const LAB_DIR = join(import.meta.dirname, '..');

/**
 * The file `#event-pipeline` stands for in this run (the starter, the solution, or the wrong fix under
 * check): a worker process loads the same code the spec imports.
 */
export function pipelineModule(): string {
  const alias = exerciseAliases(LAB_DIR, currentTarget()).find((a) => a.find === '#event-pipeline');
  if (!alias) throw new Error('package.json has no "#event-pipeline" import');
  return alias.replacement;
}

/** Polls `check` every `everyMs` until it returns true; false once `timeoutMs` has passed. */
export async function until(check: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** Where a worker of the spec reads and writes. */
export type WorkerTarget = Pick<WorkerOptions, 'databaseUrl' | 'topic' | 'deadLetterTopic' | 'groupId'>;

/** A worker process running the pipeline under test (the same file `#event-pipeline` is in this run). */
export function startWorker(target: WorkerTarget): Promise<WorkerProcess> {
  return startWorkerProcess({ ...target, pipelineModule: pipelineModule() });
}

/** How many members the group has right now (a member that crashed stays until its session times out). */
export async function members(admin: Admin, groupId: string): Promise<number> {
  const { groups } = await admin.describeGroups([groupId]);
  return groups[0]?.members.length ?? 0;
}

/**
 * Counts the crashes of every consumer made from `kafka` from now on: a consumer whose handler keeps
 * throwing gives up after its retries, and kafkajs restarts it. The real client, instrumented from outside.
 */
export function countCrashes(kafka: Kafka): { readonly count: number; readonly last?: string } {
  const seen = { count: 0, last: undefined as string | undefined };
  const original = kafka.consumer.bind(kafka);
  kafka.consumer = (config) => {
    const consumer = original(config);
    consumer.on(consumer.events.CRASH, (event) => {
      seen.count += 1;
      seen.last = event.payload.error.message;
    });
    return consumer;
  };
  return seen;
}
