/**
 * WRONG FIX: keyed, deduplicated, dead-lettered and stopped cleanly, but the write-behind buffer stays.
 *
 * Everything else was fixed, and the buffer looked harmless: a flush twice a second, in one
 * transaction that also records the event ids. But kafkajs' auto-commit commits each message as soon
 * as eachMessage returns, which here is when the event is in memory. A crash between that commit and
 * the next flush loses every event in the buffer: the group's offsets say they were handled, so nobody
 * reads them again. A database outage does the same without any crash: the flush fails, and the
 * offsets are already committed. The commit must follow the write, not the read.
 *
 * @catches no event is lost when a worker process is SIGKILLed mid-batch and a fresh consumer takes over
 * @catches while PostgreSQL is down, the group commits nothing the projection lacks, and once it is back every event is applied once
 * @catches while PostgreSQL is stalled, the group commits nothing the projection lacks, and once it is back every event is applied once
 */
import { randomUUID } from 'node:crypto';
import { type Kafka, type KafkaMessage, Partitioners } from 'kafkajs';
import { type AccountEvent, InvalidEventError, parseEvent } from '../../server/events.ts';
import type { Projector, ProjectorDeps, Publisher, Recorder, RecorderDeps } from '../../server/pipeline.ts';
import { applyEvent, type EventSource, nextSeq } from '../../server/projection.ts';

const FLUSH_EVERY_MS = 500;

export async function createPublisher(kafka: Kafka, topic: string): Promise<Publisher> {
  const producer = kafka.producer({ idempotent: true, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  return {
    async publish(events: readonly AccountEvent[]) {
      await producer.send({
        topic,
        messages: events.map((event) => ({ key: event.accountId, value: JSON.stringify(event) })),
      });
    },
    close: () => producer.disconnect(),
  };
}

/** The first version's recorder: the write side is not what this fix is about. */
export async function createRecorder({ pool, publisher }: RecorderDeps): Promise<Recorder> {
  return {
    async record(input) {
      const seq = await nextSeq(pool, input.accountId);
      const event: AccountEvent = { id: randomUUID(), ...input, seq, at: new Date().toISOString() };
      await publisher.publish([event]);
      return event;
    },
    close: async () => {},
  };
}

export async function startProjector(deps: ProjectorDeps): Promise<Projector> {
  const { kafka, pool, topic, deadLetterTopic, log = console.error } = deps;
  const consumer = kafka.consumer(deps.consumer);
  const deadLetters = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await deadLetters.connect();
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });

  let pending: { event: AccountEvent; source: EventSource }[] = [];
  let flushing: Promise<void> = Promise.resolve();
  const flush = async () => {
    const batch = pending;
    pending = [];
    if (batch.length === 0) return;
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      for (const { event, source } of batch) {
        const { rowCount } = await client.query(
          'INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING',
          [event.id],
        );
        if (rowCount === 1) await applyEvent(client, event, source);
      }
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  };
  const timer = setInterval(() => {
    flushing = flushing.then(flush).catch((error: Error) => log(`[projector] flush failed: ${error.message}`));
  }, FLUSH_EVERY_MS);

  const deadLetter = async (message: KafkaMessage, partition: number, reason: string) => {
    await deadLetters.send({
      topic: deadLetterTopic,
      messages: [
        {
          key: message.key,
          value: message.value,
          headers: { 'dlt-reason': reason, 'dlt-original-partition': String(partition), 'dlt-offset': message.offset },
        },
      ],
    });
  };

  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      try {
        pending.push({ event: parseEvent(message.value), source: { topic, partition, offset: message.offset } });
      } catch (error) {
        if (!(error instanceof InvalidEventError)) throw error;
        await deadLetter(message, partition, error.message);
      }
    },
  });

  return {
    async stop() {
      clearInterval(timer);
      await consumer.disconnect();
      await flushing;
      await flush();
      await deadLetters.disconnect();
    },
  };
}

export function shutdownOnSignals(projector: Projector): void {
  process.once('SIGTERM', () => {
    projector.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
