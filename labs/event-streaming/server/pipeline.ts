/**
 * What the learner's file (`#event-pipeline`) provides, and what it is given. The API, the worker
 * process, the spec and the load script all use these shapes; how events are published and applied is
 * the exercise.
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
  /**
   * Stops consuming and releases everything it holds. Used by the spec, the load script and `lab serve`
   * to end a run cleanly; a worker process also calls it when asked to stop over IPC.
   */
  stop(): Promise<void>;
}

/** The learner's module: `src/event-pipeline.ts`. */
export interface EventPipeline {
  createPublisher(kafka: Kafka, topic: string): Promise<Publisher>;
  startProjector(deps: ProjectorDeps): Promise<Projector>;
  /** What a worker process does when the system asks it to stop (SIGTERM, Ctrl-C). */
  shutdownOnSignals(projector: Projector): void;
}
