/**
 * Starting server/worker.ts as a child process (the lab kit's), for the spec and the load script: they
 * kill workers for real (SIGKILL, SIGTERM) and stop the rest cleanly.
 */
import { join } from 'node:path';
import { type LabChild, startChild } from '@labs/lab-kit/child';

/** Where a worker reads and writes, and which pipeline it runs. */
export interface WorkerOptions {
  /** The file that implements `#event-pipeline` (the starter, the solution, a wrong fix). */
  pipelineModule: string;
  databaseUrl: string;
  topic: string;
  deadLetterTopic: string;
  groupId: string;
  /** Extra environment (service URLs); the parent's environment is passed on too. */
  env?: NodeJS.ProcessEnv;
}

/** A worker process; disposing it SIGKILLs it if it is still running. */
export type WorkerProcess = LabChild;

/** Starts a worker and resolves once it is ready (its consumer has joined the group), within 20 s. */
export function startWorker(options: WorkerOptions): Promise<WorkerProcess> {
  return startChild(join(import.meta.dirname, 'worker.ts'), {
    name: 'the worker',
    cwd: join(import.meta.dirname, '..'),
    // kafkajs 2.2.4 sets a timer Node 24 finds negative; the warning says nothing about the lab.
    execArgv: ['--disable-warning=TimeoutNegativeWarning'],
    env: {
      ...options.env,
      PROJECTION_DATABASE_URL: options.databaseUrl,
      EVENTS_TOPIC: options.topic,
      DEAD_LETTER_TOPIC: options.deadLetterTopic,
      GROUP_ID: options.groupId,
      EVENT_PIPELINE_MODULE: options.pipelineModule,
    },
  });
}
