/**
 * A projector in a process of its own, as it runs in production: one of several workers in a consumer
 * group. The spec and the load script start it as a child process to kill it for real (SIGKILL, SIGTERM).
 *
 *   KAFKA_BROKERS=127.0.0.1:9092 PROJECTION_DATABASE_URL=postgres://... node server/worker.ts
 *
 * It prints "ready" once its consumer has joined the group. Started by startWorker (worker-process.ts),
 * it answers its parent through the lab kit: a `stop` stops it cleanly, a parent that goes away ends
 * it like a crash would.
 */
import { pathToFileURL } from 'node:url';
import { atMostEvery, readConfig, z } from '@labs/lab-kit';
import { serveParent } from '@labs/lab-kit/child';
import { createPgPool, resolveService } from '@labs/services';
import { consumerSettings, createKafka } from './kafka.ts';
import { PROJECTOR_POOL_OPTIONS } from './outages.ts';
import type { EventPipeline } from './pipeline.ts';

const config = readConfig(
  z.object({
    /** The projection's database (its tables already created). */
    PROJECTION_DATABASE_URL: z.string().min(1),
    EVENTS_TOPIC: z.string().min(1).default('labs-event-streaming-events'),
    DEAD_LETTER_TOPIC: z.string().min(1).default('labs-event-streaming-events-dlt'),
    GROUP_ID: z.string().min(1).default('labs-event-streaming-projector'),
    /** The file that implements the pipeline (the spec passes the starter, the solution or a wrong fix). */
    EVENT_PIPELINE_MODULE: z.string().optional(),
  }),
);

const file = config.EVENT_PIPELINE_MODULE;
const pipeline: EventPipeline = file ? await import(pathToFileURL(file).href) : await import('#event-pipeline');

const { url } = await resolveService('kafka');
// The projectors' timeouts (server/outages.ts): a database that stops answering fails a chunk, which
// kafkajs retries from the last commit, instead of hanging the worker. A connection that dies (a reset,
// a restart) is heard by the listener createPgPool gives every client, checked out or idle, so it fails
// the chunk it was serving and never the process; this says so in the log, one line every 5 s at most.
const pool = createPgPool(
  config.PROJECTION_DATABASE_URL,
  { max: 4, ...PROJECTOR_POOL_OPTIONS },
  atMostEvery(5000, (error: Error, skipped: number) =>
    console.error(`[worker] a database connection failed: ${error.message}${skipped ? ` (${skipped} more)` : ''}`),
  ),
);
const projector = await pipeline.startProjector({
  kafka: createKafka(url, `worker-${process.pid}`),
  pool,
  topic: config.EVENTS_TOPIC,
  deadLetterTopic: config.DEAD_LETTER_TOPIC,
  consumer: consumerSettings(config.GROUP_ID),
});
pipeline.shutdownOnSignals(projector);

serveParent({
  stop: async () => {
    await projector.stop();
    await pool.end();
  },
});
console.log('ready');
