/**
 * STARTER: a first Kafka pipeline, the way most of us write it from the kafkajs README.
 *
 * The recorder numbers each new account event in PostgreSQL and publishes it; the projector reads the
 * topic in a consumer group and moves the account balances in PostgreSQL. Writing one event at a time
 * felt slow, so the projector collects events in memory and writes them every half second, and lets
 * kafkajs commit the group's offsets for it (auto-commit).
 *
 * On a laptop with one client and one consumer it is right. Concurrent requests, several consumers, a
 * crash, a redeploy, a client's retry or one bad message each break it in its own way: run the spec
 * and read the counts.
 */
import { randomUUID } from 'node:crypto';
import { type Kafka, Partitioners } from 'kafkajs';
import { type AccountEvent, parseEvent } from '../server/events.ts';
import type { Projector, ProjectorDeps, Publisher, Recorder, RecorderDeps } from '../server/pipeline.ts';
import { applyEvent, type EventSource, nextSeq } from '../server/projection.ts';

const FLUSH_EVERY_MS = 500;

/** Publishes account events to `topic`. */
export async function createPublisher(kafka: Kafka, topic: string): Promise<Publisher> {
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  return {
    async publish(events: readonly AccountEvent[]) {
      // TODO(lab): with no key, the partitioner spreads the messages over every partition, so one
      // account's events end up on several partitions, and Kafka orders messages only within one.
      await producer.send({
        topic,
        messages: events.map((event) => ({ value: JSON.stringify(event) })),
      });
    },
    close: () => producer.disconnect(),
  };
}

/** Numbers each new event in PostgreSQL, then publishes it (the API answers 202 once it is on the topic). */
export async function createRecorder({ pool, publisher }: RecorderDeps): Promise<Recorder> {
  return {
    async record(input, _idempotencyKey) {
      // TODO(lab): numbering and publishing are two steps, and requests run side by side: a request
      // numbered 7 can publish before the one numbered 6 has, and the topic then holds them the other
      // way round. A client that retries after a 503 records its event a second time: the key is ignored.
      const event: AccountEvent = {
        id: randomUUID(),
        ...input,
        seq: await nextSeq(pool, input.accountId),
        at: new Date().toISOString(),
      };
      await publisher.publish([event]);
      return event;
    },
    close: async () => {},
  };
}

/** Consumes `deps.topic` in the group `deps.consumer.groupId` and applies each event to the projection. */
export async function startProjector(deps: ProjectorDeps): Promise<Projector> {
  const { kafka, pool, topic, log = console.error } = deps;
  const consumer = kafka.consumer(deps.consumer);
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });

  // Events received but not yet written, flushed by a timer so the consumer never waits for the database.
  let pending: { event: AccountEvent; source: EventSource }[] = [];
  let flushing: Promise<void> = Promise.resolve();
  const flush = async () => {
    const batch = pending;
    pending = [];
    // TODO(lab): applyEvent is not idempotent: an event delivered twice (after a rebalance, a restart,
    // a rewind) moves the balance twice.
    // TODO(lab): an event that fails here (one the projection cannot store) ends the flush: it and
    // every event after it in the batch are dropped, and nobody can find them again.
    for (const { event, source } of batch) await applyEvent(pool, event, source);
  };
  const timer = setInterval(() => {
    flushing = flushing.then(flush).catch((error: Error) => log(`[projector] flush failed: ${error.message}`));
  }, FLUSH_EVERY_MS);

  // TODO(lab): auto-commit commits each message once eachMessage returns, which here is as soon as it
  // is in memory. A crash before the next flush loses everything committed but not yet written.
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      // TODO(lab): a message that is not an event throws here every time it is read, so its partition
      // never gets past it.
      const event = parseEvent(message.value);
      pending.push({ event, source: { topic, partition, offset: message.offset } });
    },
  });

  return {
    async stop() {
      clearInterval(timer);
      await consumer.disconnect();
      await flushing;
      await flush();
    },
  };
}

/** What a worker process does when it is asked to stop (SIGTERM from `kill`, Docker or Kubernetes). */
export function shutdownOnSignals(_projector: Projector): void {
  // TODO(lab): exiting at once skips leaving the consumer group: the group waits for this member's
  // session to time out before anyone takes over its partitions, and the unflushed events are gone.
  process.once('SIGTERM', () => process.exit(0));
}
