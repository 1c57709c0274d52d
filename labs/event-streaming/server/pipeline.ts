/**
 * What the learner's file (`#event-pipeline`) provides, and what it is given. The API, the worker
 * process, the spec and the load script all use these shapes; how events are recorded, published and
 * applied is the exercise.
 */
import type { ConsumerConfig, Kafka } from 'kafkajs';
import type pg from 'pg';
import type { AccountEvent } from './events.ts';

/** Publishes account events to the lab's topic. */
export interface Publisher {
  /** Resolves once Kafka has acknowledged every event in `events`. */
  publish(events: readonly AccountEvent[]): Promise<void>;
  close(): Promise<void>;
}

/** What a client asks the API to record: an event without its id, its number and its time. */
export type NewEvent = Pick<AccountEvent, 'accountId' | 'type' | 'amount'>;

/** What a recorder is given. */
export interface RecorderDeps {
  /** The API's database: the account numbering (`nextSeq`) and any table of the recorder's own. */
  pool: pg.Pool;
  /** A publisher on the lab's topic (from createPublisher); every call to it is bounded by the API. */
  publisher: Publisher;
  /** Where to report what went wrong (default: console.error). */
  log?: (message: string) => void;
}

/** The API's write side: numbers each new event of an account and gets it onto the topic. */
export interface Recorder {
  /**
   * Numbers `input` after its account's last event and sees that it reaches the topic; resolves with
   * the event once it is recorded (the API then answers 202). `idempotencyKey` is the client's name
   * for this request: when the account already has an event recorded under it, that event is the
   * answer and nothing new is recorded.
   */
  record(input: NewEvent, idempotencyKey?: string): Promise<AccountEvent>;
  /** Stops whatever the recorder runs in the background; the pool and the publisher are the caller's. */
  close(): Promise<void>;
}

/**
 * The most database connections a recorder with nothing to record may take a second, for what it runs
 * in the background (a relay looking at an outbox): every API instance runs one, idle most of the day,
 * against the database its requests need.
 */
export const IDLE_CHECKOUTS_PER_SEC = 10;

/** What a projector is given. */
export interface ProjectorDeps {
  /** A kafkajs client for the lab's broker (logging and retries set by the lab). */
  kafka: Kafka;
  /** The projection's database; its tables exist (server/projection.ts). */
  pool: pg.Pool;
  /** The topic the events are published to. */
  topic: string;
  /** Where messages that can never be applied go, with the reason. */
  deadLetterTopic: string;
  /**
   * The consumer group's settings: its id, and session and heartbeat timings chosen so a dead member is
   * noticed in seconds. Pass it to `kafka.consumer()`, adding what you need.
   */
  consumer: ConsumerConfig;
  /** Where to report what went wrong (default: console.error). */
  log?: (message: string) => void;
}

/** A running consumer that keeps the projection up to date. */
export interface Projector {
  /** Stops consuming and releases all it holds: a clean end (the spec, the load script, serve, a worker). */
  stop(): Promise<void>;
}

/** The learner's module: `src/event-pipeline.ts`. */
export interface EventPipeline {
  createPublisher(kafka: Kafka, topic: string): Promise<Publisher>;
  createRecorder(deps: RecorderDeps): Promise<Recorder>;
  startProjector(deps: ProjectorDeps): Promise<Projector>;
  /** What a worker process does when the system asks it to stop (SIGTERM, Ctrl-C). */
  shutdownOnSignals(projector: Projector): void;
}
