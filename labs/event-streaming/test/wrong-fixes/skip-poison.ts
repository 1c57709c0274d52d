/**
 * WRONG FIX: a message that cannot be parsed is logged and skipped.
 *
 * The partition moves on, which was the point, but the message is gone: the log line scrolls away, and
 * nobody can look at the bytes, fix the producer and replay it. A poison message goes somewhere it
 * can be found again, with the reason it failed: a dead-letter topic.
 *
 * @catches a poison message blocks no other event and lands in the dead-letter topic with its reason
 */
import type { EachBatchPayload, Kafka, KafkaMessage } from 'kafkajs';
import { Partitioners } from 'kafkajs';
import { type AccountEvent, InvalidEventError, parseEvent } from '../../server/events.ts';
import type { Projector, ProjectorDeps, Publisher } from '../../server/pipeline.ts';
import { applyEvent, type Queryable } from '../../server/projection.ts';

/**
 * Events per transaction and per commit. Larger chunks write faster; a crash replays up to one chunk
 * (harmless, the ids are recorded), and a rebalance waits for the chunk in progress.
 */
const CHUNK = 100;

/** How long a stop may take before the process exits anyway (Kubernetes kills at 30 s by default). */
const STOP_DEADLINE_MS = 10_000;

export async function createPublisher(kafka: Kafka, topic: string): Promise<Publisher> {
  // Idempotent: the broker drops a batch the producer retried after a lost acknowledgement, so a retry
  // neither duplicates a message nor, with one request in flight, reorders a partition.
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  return {
    async publish(events: readonly AccountEvent[]) {
      await producer.send({
        topic,
        acks: -1, // every in-sync replica has it: an acknowledged event survives a broker failure
        messages: events.map((event) => ({
          key: event.accountId, // one account, one partition: its events stay in order
          value: JSON.stringify(event),
          headers: { 'event-id': event.id, 'event-type': event.type },
        })),
      });
    },
    close: () => producer.disconnect(),
  };
}

export async function startProjector(deps: ProjectorDeps): Promise<Projector> {
  const { kafka, pool, topic, log = console.error } = deps;
  const consumer = kafka.consumer(deps.consumer);
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });

  await consumer.run({
    // Offsets are committed by hand, after the events they cover are in PostgreSQL.
    autoCommit: false,
    // ...and resolved by hand too: otherwise kafkajs marks the whole batch done when eachBatch returns.
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload) => {
      for (let start = 0; start < batch.messages.length; start += CHUNK) {
        // Stopping, or the partition was taken away by a rebalance: leave the rest to the next owner.
        if (!isRunning() || isStale()) return;
        const chunk = batch.messages.slice(start, start + CHUNK);
        await applyChunk(chunk, batch.partition);
        const last = chunk.at(-1)!;
        resolveOffset(last.offset);
        // The committed offset is the next message to read, hence + 1.
        await consumer.commitOffsets([
          { topic: batch.topic, partition: batch.partition, offset: (BigInt(last.offset) + 1n).toString() },
        ]);
        // A long batch must keep telling the coordinator this member is alive; a heartbeat is also how
        // it learns of a rebalance (kafkajs then throws, and rejoins the group).
        await heartbeat();
      }
    },
  });

  /** Dead-letters the poison, then applies the rest in one transaction, each event at most once. */
  async function applyChunk(messages: KafkaMessage[], partition: number): Promise<void> {
    const events: { event: AccountEvent; offset: string }[] = [];
    const poison: { message: KafkaMessage; reason: string }[] = [];
    for (const message of messages) {
      try {
        events.push({ event: parseEvent(message.value), offset: message.offset });
      } catch (error) {
        if (!(error instanceof InvalidEventError)) throw error;
        poison.push({ message, reason: error.message });
      }
    }
    for (const { message, reason } of poison)
      log(`[projector] skipped ${topic}/${partition}@${message.offset}: ${reason}`);
    if (events.length === 0) return;

    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const fresh = await markProcessed(
        client,
        events.map((e) => e.event.id),
      );
      for (const { event, offset } of events) {
        if (fresh.has(event.id)) await applyEvent(client, event, { topic, partition, offset });
      }
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  let stopping: Promise<void> | undefined;
  return {
    stop() {
      // disconnect() lets the chunk in progress finish (eachBatch checks isRunning between chunks),
      // then sends LeaveGroup, so the others rebalance now rather than after a session timeout.
      stopping ??= (async () => {
        await consumer.disconnect();
      })().catch((error: Error) => log(`[projector] stopping: ${error.message}`));
      return stopping;
    },
  };
}

/**
 * Records `ids` as processed and returns those that were not already: one statement for the chunk.
 * It runs in the caller's transaction, so the record and the balance change commit or roll back
 * together. The table grows by one row per event: keep it longer than the topic's retention (and a
 * rewind's reach), then delete old rows.
 */
async function markProcessed(db: Queryable, ids: string[]): Promise<Set<string>> {
  const { rows } = await db.query<{ event_id: string }>(
    `INSERT INTO processed_events (event_id) SELECT unnest($1::uuid[])
     ON CONFLICT (event_id) DO NOTHING RETURNING event_id`,
    [ids],
  );
  return new Set(rows.map((row) => row.event_id));
}

export function shutdownOnSignals(projector: Projector): void {
  const stop = (signal: NodeJS.Signals) => {
    // A stop that hangs (a broker gone) must not keep the process alive past the orchestrator's patience.
    setTimeout(() => process.exit(1), STOP_DEADLINE_MS).unref();
    projector.stop().then(
      () => process.exit(0),
      (error: Error) => {
        console.error(`[projector] ${signal}: ${error.message}`);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
