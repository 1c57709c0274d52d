/**
 * The lab's fault policy, in one place: how long the API and the projectors wait for PostgreSQL and
 * Kafka, and how the API tells an outage (a 503 a client can act on) from a bug (a logged 500).
 *
 * Why it is the server's job and not the learner's: a request must never hang for the length of a
 * stall, whichever pipeline is plugged in. The pools are made here with their timeouts, and every call
 * the API makes to Kafka is bounded here, around the learner's publisher, not inside it.
 */
import { boundedPool, type Outage } from '@labs/lab-kit';
import { isKafkaOutage, isPostgresOutage, withinDeadline as withinServiceDeadline } from '@labs/services';

/** What a client is told to wait before it tries again, in seconds, while a service is not answering. */
export const RETRY_AFTER_SEC = 2;

/**
 * The API's pool. Every query the API sends is a one-row read or upsert, so a couple of seconds is
 * already a stall (the kit's boundedPool says which wait each bound cuts short).
 */
export const API_POOL_OPTIONS = boundedPool({ statementMs: 2000, answerMs: 2500, connectMs: 2000 });

/**
 * The projectors' pool. A chunk is one transaction of short statements, so the bounds are a little
 * looser than the API's, and below the consumer's 6 s session timeout on purpose: a chunk that cannot
 * reach the database fails (kafkajs retries it from the last commit) while its member is still in the
 * group, instead of hanging until the group evicts it.
 */
export const PROJECTOR_POOL_OPTIONS = boundedPool({ statementMs: 3000, answerMs: 4000, connectMs: 3000 });

/**
 * How long the API waits for Kafka (a publish, the lag or the dead-letter count) before it answers 503.
 * kafkajs has its own bounds, but they are long for a request: a stalled broker costs a request 30 s
 * (its default request timeout), then retries. A publish on a healthy broker takes milliseconds.
 */
export const KAFKA_DEADLINE_MS = 3000;

/**
 * `work`, or an outage of Kafka after KAFKA_DEADLINE_MS. Giving up does not cancel: a publish that was
 * given up on may still reach the topic once the broker answers, so a 503 from a publish means "not
 * known to be recorded", not "not recorded" (the projector's event-id check absorbs a copy of the same
 * event, and an Idempotency-Key lets a client's retry be recognised as the same request).
 */
export const withinDeadline = <T>(work: Promise<T>, what: string): Promise<T> =>
  withinServiceDeadline('kafka', work, what, KAFKA_DEADLINE_MS);

/**
 * The outages the API answers with a 503 and Retry-After, anything else being a bug (a logged 500).
 * The service named is the one whose client raised the error, never a guess from its symptoms: a broker
 * that refuses connections is ECONNREFUSED in kafkajs' error too, and is Kafka's, not the database's.
 */
export const OUTAGES: readonly Outage[] = [
  { test: isKafkaOutage, service: 'Kafka', retryAfterSec: RETRY_AFTER_SEC },
  { test: isPostgresOutage, service: 'The database', retryAfterSec: RETRY_AFTER_SEC },
];
