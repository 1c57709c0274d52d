/**
 * The event-streaming lab, described once: `lab serve` and the spec start it from here. It creates the
 * topics and the projection's tables, runs PROJECTORS consumers of one group in this process (default
 * 2), and serves the API that publishes events and reads balances.
 *
 * Names: `lab serve` uses fixed topic and group names (kept, like its database); a spec or load script
 * gets names of its own, and its topics are deleted when it closes. Faults: server/outages.ts.
 */
import { type Kafka, Partitioners } from 'kafkajs';
import type pg from 'pg';
import { createPublisher, createRecorder, startProjector } from '#event-pipeline';
import { defineLab, uniqueId, wholeNumber, z } from '@labs/lab-kit';
import { logConsumerEvents, resolveService } from '@labs/services';
import { createApp, poisonValue } from './app.ts';
import { consumerSettings, createKafka, ensureTopics, lag, messagesIn } from './kafka.ts';
import { API_POOL_OPTIONS, PROJECTOR_POOL_OPTIONS, withinDeadline } from './outages.ts';
import type { EventPipeline, Projector, Publisher } from './pipeline.ts';
import { migrate, requirePostgresServer } from './projection.ts';

/** What a spec may set instead of the configuration. */
export interface EventStreamingLabOptions {
  /** Consumers of the group run in this process (0: none, start workers yourself). */
  projectors: number;
  /** The pipeline to run; default: the exercise, `#event-pipeline`. */
  pipeline: Omit<EventPipeline, 'shutdownOnSignals'>;
  /**
   * The pool the API reads and numbers events through (a spec passes one behind a stalling proxy, or on
   * a closed port). Default: a new one on this start's database, with API_POOL_OPTIONS. The tables are
   * created through the projectors' own pool, so this one may be broken from the start.
   */
  pool: pg.Pool;
  /**
   * The Kafka client the API, the publisher and the projectors use (a spec passes one whose
   * connections go through a stalling proxy). Default: the lab's. Creating and deleting the topics
   * always goes through a client of the lab's own, so a spec's broken one cannot leave topics behind.
   */
  kafka: Kafka;
  /** Receives the outages behind a 503 (a service down or stalled), a line every 5 s at most. Default: a warning. */
  onOutage: (line: string) => void;
}

export default defineLab({
  config: z.object({ PROJECTORS: wholeNumber({ fallback: 2, min: 0, max: 6 }) }),
  async build(context, options: Partial<EventStreamingLabOptions>) {
    const pipeline = options.pipeline ?? { createPublisher, createRecorder, startProjector };
    const count = options.projectors ?? context.config.PROJECTORS;
    const base = context.purpose === 'serve' ? 'labs-event-streaming' : `labs-event-streaming-${uniqueId()}`;
    const topic = `${base}-events`;
    const deadLetterTopic = `${topic}-dlt`;
    const groupId = `${base}-projector`;

    requirePostgresServer((await resolveService('postgres')).provider);
    const { url } = await resolveService('kafka');
    const own = createKafka(url);
    const kafka = options.kafka ?? own;
    if (context.purpose === 'serve') logConsumerEvents(kafka, console.log);
    // Two pools: the projectors' transactions and the API's requests are bounded differently (see
    // server/outages.ts), and a projector holding connections never starves the API.
    const projectionPool = await context.database(PROJECTOR_POOL_OPTIONS);
    await migrate(projectionPool);
    const pool = options.pool ?? (await context.database(API_POOL_OPTIONS));

    const housekeeping = own.admin();
    await housekeeping.connect();
    context.onClose(async () => {
      if (context.purpose !== 'serve') {
        await housekeeping.deleteTopics({ topics: [topic, deadLetterTopic] }).catch(() => undefined);
        await housekeeping.deleteGroups([groupId]).catch(() => undefined);
      }
      await housekeeping.disconnect();
    });
    await ensureTopics(housekeeping, [topic, deadLetterTopic]);
    const connected = async <T extends { connect(): Promise<void>; disconnect(): Promise<void> }>(client: T) => {
      await client.connect();
      context.onClose(() => client.disconnect());
      return client;
    };
    // What the API asks Kafka (the lag, the dead letters) goes through the API's client.
    const admin = kafka === own ? housekeeping : await connected(kafka.admin());

    // onClose runs the last registered first: projectors stop before the topics go.
    const publisher = await pipeline.createPublisher(kafka, topic);
    context.onClose(() => publisher.close());
    // The recorder's calls to Kafka are bounded here, around the learner's publisher: a stalled broker
    // costs a request (or a relay round) KAFKA_DEADLINE_MS, never kafkajs' 30 s and its retries.
    const bounded: Publisher = {
      publish: (events) => withinDeadline(publisher.publish(events), 'publishing the event'),
      close: () => publisher.close(),
    };
    const recorder = await pipeline.createRecorder({ pool, publisher: bounded });
    context.onClose(() => recorder.close());
    const raw = await connected(kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner }));
    const projectors: Projector[] = [];
    context.onClose(() => Promise.all(projectors.map((p) => p.stop())));
    const projectorDeps = { kafka, pool: projectionPool, topic, deadLetterTopic };
    for (let i = 0; i < count; i++) {
      projectors.push(await pipeline.startProjector({ ...projectorDeps, consumer: consumerSettings(groupId) }));
    }

    const app = createApp({
      pool,
      recorder,
      publishPoison: async (accountId) => {
        await raw.send({ topic, messages: [{ key: accountId, value: poisonValue(accountId) }] });
      },
      deadLettered: () => messagesIn(admin, deadLetterTopic),
      pending: () => lag(admin, groupId, topic),
      published: () => messagesIn(admin, topic),
      onOutage: options.onOutage,
    });
    return {
      app,
      usage: (base) => [
        `Kafka: ${url}, topic ${topic} (${count} projectors in group ${groupId}), dead letters in ${deadLetterTopic}`,
        `Try:   for i in 1 2 3; do curl -s -H 'content-type: application/json' -d '{"accountId":"alice","type":"deposited","amount":1000}' ${base}/api/events; echo; done`,
        `Then:  curl -s ${base}/api/accounts/alice; echo; curl -s ${base}/api/stats`,
        `Poison: curl -s -H 'content-type: application/json' -d '{"accountId":"alice"}' ${base}/api/poison`,
        `Worker: another projector in its own process, to stop with kill -TERM or kill -KILL <pid>:`,
        `        KAFKA_BROKERS=${url} PROJECTION_DATABASE_URL='${projectionPool.options.connectionString ?? ''}' EVENTS_TOPIC=${topic} GROUP_ID=${groupId} node ${context.target === 'solution' ? '--conditions=lab-solution ' : ''}labs/event-streaming/server/worker.ts & echo "pid $!"`,
      ],
    };
  },
});
