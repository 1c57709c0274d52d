/**
 * The lab's fault policy, in one place: how long the API and the projectors wait for PostgreSQL and
 * Kafka, and how the API tells an outage (a 503 a client can act on) from a bug (a logged 500).
 *
 * Why it is the server's job and not the learner's: a request must never hang for the length of a
 * stall, whichever pipeline is plugged in. The pools are made here with their timeouts, and every call
 * the API makes to Kafka is bounded here, around the learner's publisher, not inside it.
 */
import type pg from 'pg';
import type { Outage } from '@labs/lab-kit';
import { isKafkaOutage, isPostgresOutage } from '@labs/services';

/** What a client is told to wait before it tries again, in seconds, while a service is not answering. */
export const RETRY_AFTER_SEC = 2;

/**
 * The API's pool. Every query the API sends is a one-row read or upsert, so a couple of seconds is
 * already a stall: the server cancels a statement after 2 s (`statement_timeout`, which also ends a
 * wait for a row lock), the client gives up after 2.5 s when the server cannot answer at all
 * (`query_timeout`: a frozen host, a dead network path), and opening a connection is bounded at 2 s.
 */
export const API_POOL_OPTIONS: pg.PoolConfig = {
  statement_timeout: 2000,
  query_timeout: 2500,
  connectionTimeoutMillis: 2000,
};

/**
 * The projectors' pool. A chunk is one transaction of short statements, so the bounds are a little
 * looser than the API's, and below the consumer's 6 s session timeout on purpose: a chunk that cannot
 * reach the database fails (kafkajs retries it from the last commit) while its member is still in the
 * group, instead of hanging until the group evicts it.
 */
export const PROJECTOR_POOL_OPTIONS: pg.PoolConfig = {
  statement_timeout: 3000,
  query_timeout: 4000,
  connectionTimeoutMillis: 3000,
};

/**
 * How long the API waits for Kafka (a publish, the lag or the dead-letter count) before it answers 503.
 * kafkajs has its own bounds, but they are long for a request: a stalled broker costs a request 30 s
 * (its default request timeout), then retries. A publish on a healthy broker takes milliseconds.
 */
export const KAFKA_DEADLINE_MS = 3000;

/** A call to Kafka that was given up on at the deadline; the call itself may still finish later. */
export class KafkaDeadlineError extends Error {
  override readonly name = 'KafkaDeadlineError';
}

/**
 * `work`, or a KafkaDeadlineError after `ms`. Giving up does not cancel: a publish that was given up
 * on may still reach the topic once the broker answers, so a 503 from a publish means "not known to
 * be recorded", not "not recorded" (the projector's event-id check absorbs a copy of the same event,
 * and an Idempotency-Key lets a client's retry be recognised as the same request).
 */
export async function withinDeadline<T>(work: Promise<T>, what: string, ms = KAFKA_DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new KafkaDeadlineError(`${what}: Kafka did not answer within ${ms} ms`)), ms);
  });
  try {
    // Promise.race listens to both, so a late rejection of `work` is handled, not left unhandled.
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** True when `error`, or an error behind it, is the API's own deadline on a call to Kafka. */
function isKafkaDeadline(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error instanceof KafkaDeadlineError) return true;
  return error.cause !== undefined && error.cause !== error && isKafkaDeadline(error.cause);
}

/**
 * The outages the API answers with a 503 and Retry-After (the lab kit's `problemHandler({ outages })`),
 * anything else being a bug (a logged 500). The service named is the one whose client raised the error
 * (the outage tests of @labs/services), never a guess from its symptoms: a broker that refuses
 * connections is ECONNREFUSED in kafkajs' error too, and is Kafka's, not the database's. The API's own
 * deadline on a call to Kafka is Kafka's.
 */
export const OUTAGES: readonly Outage[] = [
  { test: (error) => isKafkaDeadline(error) || isKafkaOutage(error), service: 'Kafka', retryAfterSec: RETRY_AFTER_SEC },
  { test: isPostgresOutage, service: 'The database', retryAfterSec: RETRY_AFTER_SEC },
];
