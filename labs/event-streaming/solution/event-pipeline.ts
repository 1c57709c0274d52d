/**
 * SOLUTION: events in order per account, none lost, none applied twice, none recorded twice for one
 * request, and one bad message costs one message, not a partition.
 *
 * - Order, written: the recorder writes each event into an outbox table in the transaction that
 *   numbers it, and one relay publishes the outbox in the order it was written. Requests for one
 *   account take turns on the account's row while they number, so the outbox holds each account's
 *   events in the order of their numbers, and so does the topic, however many requests run at once.
 * - Order, read: the publisher keys each message by account id, so all of an account's events land on
 *   one partition, which Kafka keeps in order and gives to one consumer of the group at a time.
 * - One request, one event: a client's Idempotency-Key is stored with the event, in the same
 *   transaction; the same key again finds that event instead of recording another.
 * - Nothing lost: the offsets the group commits only ever cover events already written to PostgreSQL.
 *   A crash replays from the last commit instead of skipping past it: at-least-once delivery. Each
 *   commit is awaited: one the group refuses (it rebalanced, or went on without this member during a
 *   long chunk) ends the batch, and the consumer rejoins; the partition's next reader replays the chunk.
 * - Nothing twice: each chunk of events is applied in one PostgreSQL transaction that also records the
 *   event ids in `processed_events`; an id already there is skipped. At-least-once delivery plus an
 *   idempotent effect is "exactly once" in effect, without Kafka transactions.
 * - Poison: a message that can never be parsed goes to the dead-letter topic with the reason in its
 *   headers, and so does an event that fails on its own a few times in a row (a value the projection
 *   cannot store); its partition moves on. An outage (PostgreSQL down) is thrown instead, so kafkajs
 *   retries from the last commit: a transient failure must not send good events to the dead letters.
 * - Shutdown: SIGTERM stops the consumer, which finishes its chunk and leaves the group, so the group
 *   rebalances at once instead of waiting for this member's session to time out.
 *
 * What it costs: an outbox row per event and a relay that publishes a moment after the answer (the
 * API answers 202 once the event is in PostgreSQL, not in Kafka); a row per event in
 * `processed_events` (to be pruned past the longest possible replay); a commit round trip per chunk;
 * and one account's throughput capped at what one partition's consumer can do. Kafka transactions
 * would not remove any of it: they cover writes to Kafka, not to PostgreSQL.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EachBatchPayload, Kafka, KafkaJSError, KafkaJSProtocolError, KafkaMessage, Producer } from 'kafkajs';
import { Partitioners } from 'kafkajs';
import { atMostEvery } from '@labs/lab-kit';
import { isPostgresOutage } from '@labs/services';
import { type AccountEvent, InvalidEventError, parseEvent } from '../server/events.ts';
import type { NewEvent, Projector, ProjectorDeps, Publisher, Recorder, RecorderDeps } from '../server/pipeline.ts';
import { applyEvent, nextSeq, type Queryable } from '../server/projection.ts';

/**
 * Events per transaction and per commit. Larger chunks write faster; a crash replays up to one chunk
 * (harmless, the ids are recorded), and a rebalance waits for the chunk in progress.
 */
const CHUNK = 100;

/** An event read from the topic, with the message it came in (its offset, and what a dead letter copies). */
interface Parsed {
  event: AccountEvent;
  message: KafkaMessage;
}

/** How long a stop may take before the process exits anyway (Kubernetes kills at 30 s by default). */
const STOP_DEADLINE_MS = 10_000;

/**
 * How often an event that fails on its own (not an outage) is tried before it is dead-lettered. A
 * deadlock or a serialization failure passes on a second try; a value the projection cannot store
 * fails every time, and without a bound it would hold its partition for ever.
 */
const MAX_ATTEMPTS = 3;

/** Outbox rows per relay round: one send to Kafka, one transaction. */
const RELAY_BATCH = 100;

/** How often the relay looks at the outbox when nobody nudged it (another instance's rows, a failed round). */
const RELAY_POLL_MS = 250;

/** The advisory lock that makes one relay at a time publish, whichever instance it runs in. Any number, the same everywhere. */
const RELAY_LOCK = 80_001;

export async function createPublisher(kafka: Kafka, topic: string): Promise<Publisher> {
  // Idempotent: the broker drops a batch the producer retried after a lost acknowledgement, so a retry
  // neither duplicates a message nor, with one request in flight, reorders a partition. Its retries stay
  // bounded (the lab's client: 5), so a publish that cannot succeed fails instead of hanging the API;
  // if the caller then sends again, the topic may hold an event twice, which the projector's id check
  // absorbs.
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

export async function createRecorder({ pool, publisher, log = console.error }: RecorderDeps): Promise<Recorder> {
  const relayFailed = atMostEvery(5000, (error: Error, skipped: number) =>
    // Stryker disable next-line StringLiteral: the log line's wording is not behaviour
    log(`[relay] could not publish the outbox, trying again: ${error.message}${skipped ? ` (${skipped} more)` : ''}`),
  );
  let stopped = false;
  // Stryker disable next-line BooleanLiteral: the loop sets it to false before anything reads it
  let nudged = false;
  let wake = () => {
    nudged = true;
  };
  /** Waits RELAY_POLL_MS, or less if a record comes in meanwhile. */
  const nap = () =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        wake = () => {
          nudged = true;
        };
        resolve();
      };
      const timer = setTimeout(done, RELAY_POLL_MS);
      wake = done;
    });
  const relay = (async () => {
    while (!stopped) {
      nudged = false;
      let relayed = 0;
      try {
        relayed = await relayOnce(pool, publisher);
      } catch (error) {
        relayFailed(error as Error);
      }
      if (!stopped && !nudged && relayed < RELAY_BATCH) await nap();
    }
  })();

  return {
    async record(input, idempotencyKey) {
      const client = await pool.connect();
      let failed: Error | undefined;
      try {
        await client.query('BEGIN');
        const event = await writeToOutbox(client, input, idempotencyKey);
        await client.query(event.fresh ? 'COMMIT' : 'ROLLBACK');
        if (event.fresh) wake();
        return event.event;
      } catch (error) {
        failed = error as Error;
        throw error;
      } finally {
        // After a failure the connection is closed, not rolled back: PostgreSQL rolls back what a closed
        // connection held, and a ROLLBACK sent to a stalled server would keep the caller waiting as long
        // again as the statement that failed.
        client.release(failed);
      }
    },
    async close() {
      stopped = true;
      wake();
      await relay;
    },
  };
}

/**
 * Numbers `input` and writes it to the outbox, in the caller's transaction; or finds the event the
 * account already recorded under `idempotencyKey` (fresh: false, and the caller rolls back, which
 * gives the number back).
 */
async function writeToOutbox(
  db: Queryable,
  input: NewEvent,
  idempotencyKey: string | undefined,
): Promise<{ event: AccountEvent; fresh: boolean }> {
  // Numbering first: it locks the account's row until the transaction ends, so the requests of one
  // account take turns from here on, each one's outbox row is written after the previous one's
  // commit, and the key lookup below cannot race a twin request.
  const seq = await nextSeq(db, input.accountId);
  // Mutation survivor: the guard always true looks a keyless request up with a NULL key, which matches
  // nothing: one query more under the row lock, a cost and not a wrong answer; only a count of statements shows it.
  if (idempotencyKey !== undefined) {
    const { rows } = await db.query<{ event: AccountEvent }>(
      'SELECT event FROM event_outbox WHERE account_id = $1 AND idempotency_key = $2',
      [input.accountId, idempotencyKey],
    );
    if (rows[0]) return { event: rows[0].event, fresh: false };
  }
  const event: AccountEvent = { id: randomUUID(), ...input, seq, at: new Date().toISOString() };
  await db.query('INSERT INTO event_outbox (account_id, idempotency_key, event) VALUES ($1, $2, $3)', [
    event.accountId,
    idempotencyKey ?? null,
    event,
  ]);
  return { event, fresh: true };
}

/**
 * One relay round: publishes the oldest unpublished outbox rows in the order they were written, and
 * marks them published; returns how many. A transaction-scoped advisory lock lets one relay run at a
 * time across every instance (two would race each other's rows onto the topic). Marked after Kafka
 * acknowledged: a crash in between publishes them again, which the projector's event-id check absorbs.
 */
async function relayOnce(pool: RecorderDeps['pool'], publisher: Publisher): Promise<number> {
  const client = await pool.connect();
  let failed: Error | undefined;
  try {
    await client.query('BEGIN');
    const { rows: lock } = await client.query<{ ours: boolean }>('SELECT pg_try_advisory_xact_lock($1) AS ours', [
      RELAY_LOCK,
    ]);
    // Stryker disable next-line OptionalChaining: a SELECT of one expression returns one row, always
    if (!lock[0]?.ours) {
      await client.query('ROLLBACK');
      return 0;
    }
    const { rows } = await client.query<{ position: string; event: AccountEvent }>(
      'SELECT position, event FROM event_outbox WHERE published_at IS NULL ORDER BY position LIMIT $1',
      [RELAY_BATCH],
    );
    if (rows.length > 0) {
      await publisher.publish(rows.map((row) => row.event));
      await client.query('UPDATE event_outbox SET published_at = now() WHERE position = ANY($1::bigint[])', [
        rows.map((row) => row.position),
      ]);
    }
    await client.query('COMMIT');
    return rows.length;
  } catch (error) {
    failed = error as Error;
    throw error;
  } finally {
    client.release(failed); // closed after a failure, as in record()
  }
}

export async function startProjector(deps: ProjectorDeps): Promise<Projector> {
  const { kafka, pool, topic, deadLetterTopic, log = console.error } = deps;
  const deadLetters = kafka.producer({ idempotent: true, createPartitioner: Partitioners.DefaultPartitioner });
  const consumer = kafka.consumer(deps.consumer);
  await deadLetters.connect();
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });

  await consumer.run({
    // Offsets are committed by hand, after the events they cover are in PostgreSQL. (With true, kafkajs would
    // also commit what eachBatch resolved, which is only ever what PostgreSQL holds: at a stop, the chunk whose
    // hand commit it skips because the consumer is stopping. Never ahead of the projection, so never worse.)
    // Stryker disable next-line BooleanLiteral: true commits nothing the projection lacks (see above)
    autoCommit: false,
    // ...and resolved by hand too: otherwise kafkajs marks the whole batch done when eachBatch returns.
    // Stryker disable next-line BooleanLiteral: eachBatch returns before its end only when stopping, and nothing is committed after that
    eachBatchAutoResolve: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload) => {
      for (let start = 0; start < batch.messages.length; start += CHUNK) {
        // Stopping: leave the rest to the next owner. isStale() is not a rebalance (in kafkajs 2 it turns
        // true only once consumer.seek() moved this partition, and this file never seeks; it stays so a
        // seek added later cannot write a batch fetched before it). A rebalance reaches this member as
        // an error from heartbeat() or from the commit below, which ends the batch.
        if (!isRunning() || isStale()) return;
        const chunk = batch.messages.slice(start, start + CHUNK);
        await applyChunk(chunk, batch.partition);
        const last = chunk.at(-1)!;
        resolveOffset(last.offset);
        // The committed offset is the next message to read, hence + 1. Awaited: a commit the group
        // refuses ends the batch here, instead of failing later where nobody is listening.
        await commit(batch.topic, batch.partition, (BigInt(last.offset) + 1n).toString());
        // A long batch must keep telling the coordinator this member is alive; a heartbeat is also how
        // it learns of a rebalance (kafkajs then throws, and rejoins the group).
        await heartbeat();
      }
    },
  });

  /**
   * The broker's answers to a commit that mean "rejoin the group": it is rebalancing, this member's
   * generation is gone, or the member itself is. kafkajs rejoins on each of them when they reach it.
   */
  // Mutation survivor: the first name emptied: a group answers a commit with REBALANCE_IN_PROGRESS only between the
  // member's JoinGroup and its SyncGroup, where kafkajs never commits; a test would need a broker made to answer so.
  // Mutation survivor: the second name emptied: a stale generation is refused only to a member that commits after a
  // rebalance it took part in and before its own rejoin; the spec's refusals are all UNKNOWN_MEMBER_ID (a dropped member).
  const REJOIN = new Set(['REBALANCE_IN_PROGRESS', 'ILLEGAL_GENERATION', 'UNKNOWN_MEMBER_ID']);

  /**
   * Commits `offset` (the next message to read) for `partition`. The group refuses it when it moved on
   * while the chunk was being written (a rebalance, or this member left behind because its session ran
   * out): the chunk is in PostgreSQL anyway, and the partition's next reader replays it from the last
   * commit, which the ids absorb. kafkajs hands such a refusal back wrapped in an error it treats as
   * fatal, and would stop this consumer for good; the broker's own answer, thrown instead, is one it
   * knows: it rejoins the group and carries on.
   */
  async function commit(topicName: string, partition: number, offset: string): Promise<void> {
    try {
      await consumer.commitOffsets([{ topic: topicName, partition, offset }]);
    } catch (error) {
      // kafkajs' wrapper keeps the broker's answer as its cause.
      const answer = (error as KafkaJSError).cause as Partial<KafkaJSProtocolError> | undefined;
      // Mutation survivor: the whole test `true`, or `||`, throws bare a cause that is no refusal (Kafka away through
      // every retry): kafkajs restarts or rejoins on it as on the wrapper; no test makes a commit fail so. The left
      // test `true` differs only for an error without a cause, which kafkajs' retrier never throws.
      // Stryker disable next-line OptionalChaining: kafkajs' retrier gives every error it throws a cause
      throw answer?.type !== undefined && REJOIN.has(answer.type) ? answer : error;
    }
  }

  /** Dead-letters the poison, then applies the rest in one transaction, each event at most once. */
  async function applyChunk(messages: KafkaMessage[], partition: number): Promise<void> {
    const events: Parsed[] = [];
    const poison: { message: KafkaMessage; reason: string }[] = [];
    for (const message of messages) {
      try {
        events.push({ event: parseEvent(message.value), message });
      } catch (error) {
        // Stryker disable next-line ConditionalExpression: parseEvent throws InvalidEventError and nothing else
        if (!(error instanceof InvalidEventError)) throw error;
        poison.push({ message, reason: error.message });
      }
    }
    // Before the commit: a crash in between replays the chunk, and the dead-letter topic gets the
    // message twice (at-least-once there too; its readers key on the original coordinates).
    if (poison.length > 0) await sendToDeadLetters(deadLetters, deadLetterTopic, topic, partition, poison);
    // Mutation survivor: the guard always false opens an empty transaction for a chunk of poison only: a connection
    // more, and while PostgreSQL is down that chunk waits for it instead of moving on; no test has poison alone then.
    if (events.length === 0) return;
    try {
      await applyTogether(events, partition);
    } catch (error) {
      // An outage fails every event alike: throw, and kafkajs retries the chunk from the last commit.
      // Mutation survivor: the guard always false throws the outage from the first event's lone try instead, one
      // try later; only a count of connections asked of a database that is down shows it.
      if (isPostgresOutage(error)) throw error;
      // Something in the chunk fails on its own. One event at a time, to find it and let the rest by.
      for (const one of events) await applyAlone(one, partition);
    }
  }

  /** Applies `one` in a transaction of its own, up to MAX_ATTEMPTS times; then dead-letters it with why. */
  async function applyAlone(one: Parsed, partition: number): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await applyTogether([one], partition);
        return;
      } catch (error) {
        if (isPostgresOutage(error)) throw error;
        if (attempt >= MAX_ATTEMPTS) {
          const reason = `applying it failed ${attempt} times: ${(error as Error).message}`;
          // Stryker disable next-line StringLiteral,CallExpression: the log line is not behaviour (the dead letter has the reason)
          log(`[projector] event ${one.event.id} to the dead letters: ${reason}`);
          await sendToDeadLetters(deadLetters, deadLetterTopic, topic, partition, [{ message: one.message, reason }]);
          return;
        }
        // Stryker disable next-line ArithmeticOperator: how long the pause is: time, which the spec never asserts
        await sleep(100 * attempt); // a lock conflict may be gone by then; a bad value is not
      }
    }
  }

  /** Applies `events` in one transaction, each at most once: all of them, or none. */
  async function applyTogether(events: Parsed[], partition: number): Promise<void> {
    const client = await pool.connect();
    let failed: Error | undefined;
    try {
      await client.query('BEGIN');
      const fresh = await markProcessed(
        client,
        events.map((e) => e.event.id),
      );
      for (const { event, message } of events) {
        // delete, not has: the same event can come twice in one chunk (a publish retried after a lost
        // acknowledgement), and the statement above returned its id once.
        if (fresh.delete(event.id)) await applyEvent(client, event, { topic, partition, offset: message.offset });
      }
      await client.query('COMMIT');
    } catch (error) {
      failed = error as Error;
      throw error;
    } finally {
      client.release(failed); // closed after a failure, as in record()
    }
  }

  let stopping: Promise<void> | undefined;
  return {
    stop() {
      // disconnect() lets the chunk in progress finish (eachBatch checks isRunning between chunks),
      // then sends LeaveGroup, so the others rebalance now rather than after a session timeout.
      // A failed stop is only logged; stop() resolves either way.
      // Stryker disable ArrowFunction,StringLiteral: the log line (its call or its wording) is not behaviour
      stopping ??= (async () => {
        await consumer.disconnect();
        await deadLetters.disconnect();
      })().catch((error: Error) => log(`[projector] stopping: ${error.message}`));
      // Stryker restore ArrowFunction,StringLiteral
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

/** Copies each poison message to the dead-letter topic with why it failed and where it came from. */
async function sendToDeadLetters(
  producer: Producer,
  deadLetterTopic: string,
  topic: string,
  partition: number,
  poison: { message: KafkaMessage; reason: string }[],
): Promise<void> {
  await producer.send({
    topic: deadLetterTopic,
    acks: -1,
    messages: poison.map(({ message, reason }) => ({
      key: message.key,
      value: message.value,
      headers: {
        ...message.headers,
        'dlt-reason': reason,
        'dlt-original-topic': topic,
        'dlt-original-partition': String(partition),
        'dlt-original-offset': message.offset,
        'dlt-failed-at': new Date().toISOString(),
      },
    })),
  });
}

export function shutdownOnSignals(projector: Projector): void {
  const stop = (signal: NodeJS.Signals) => {
    // A stop that hangs (a broker gone) must not keep the process alive past the orchestrator's patience.
    // Mutation survivor: the exit emptied survives: a test would need a stop that hangs (a broker that stops
    // answering during LeaveGroup) and to wait past STOP_DEADLINE_MS for the exit code 1.
    setTimeout(() => process.exit(1), STOP_DEADLINE_MS).unref();
    projector.stop().then(
      () => process.exit(0),
      // Stryker disable all: unreachable with this file's projector, whose stop() catches its own failure
      (error: Error) => {
        console.error(`[projector] ${signal}: ${error.message}`);
        process.exit(1);
      },
    );
  };
  // Stryker restore all: here, before a statement (Stryker reads only a comment that leads one), not after the branch
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
