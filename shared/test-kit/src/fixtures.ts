/**
 * Per-test-file isolation on shared servers: each fixture owns a unique namespace (key prefix,
 * database, queue names, topic and group names) and removes it on dispose, so tests leave the servers
 * as they found them.
 *
 *   await using redis = await useRedis();
 */
import amqp from 'amqplib';
import type { Redis } from 'ioredis';
import { uniqueId } from '@labs/lab-kit';
import {
  credentialsInPostgres,
  credentialsInRedis,
  expectEveryKeyExpires,
  expectNoCredentialAtRest,
} from './invariants.ts';
import {
  createRedisClient,
  deleteByPrefix,
  dropDatabase,
  ensureDatabase,
  resolveService,
  stopService,
} from '@labs/services';
import {
  type Admin,
  type Consumer,
  type ConsumerConfig,
  Kafka,
  logLevel as kafkaLogLevel,
  Partitioners,
  type Producer,
  type ProducerConfig,
} from 'kafkajs';

/** A Redis client plus a key prefix that only this fixture uses. */
export interface RedisFixture extends AsyncDisposable {
  readonly url: string;
  readonly client: Redis;
  /** Prefix every key with this; dispose deletes every key under it. */
  readonly prefix: string;
  /** Opens another client on the same server (e.g. one per simulated app instance); closed on dispose. */
  connect(): Redis;
}

/** Options for {@link useRedis}. */
export interface RedisFixtureOptions {
  /**
   * Patterns (relative to the prefix, `*` for any run of characters) of keys that may live without an
   * expiry, each with its reason: the lab manifest's `invariants.permanentKeys`.
   */
  permanentKeys?: Record<string, string>;
}

/**
 * Resolves Redis and hands out a private key prefix. On dispose it checks that every key under the
 * prefix has an expiry (*nothing lives for ever*, bar `permanentKeys`), deletes them all, closes its
 * clients, and then throws an InvariantError naming the keys that had none (or the credentials recorded
 * with `recordCredential` that it found stored verbatim).
 */
export async function useRedis(options: RedisFixtureOptions = {}): Promise<RedisFixture> {
  const { url } = await resolveService('redis');
  const client = createRedisClient(url);
  const prefix = `labs:test:${uniqueId()}:`;
  const extra: Redis[] = [];
  return {
    url,
    client,
    prefix,
    connect() {
      const c = createRedisClient(url);
      extra.push(c);
      return c;
    },
    async [Symbol.asyncDispose]() {
      // Checked first, thrown last: the keys are deleted and the clients closed either way.
      const failure: unknown = await (async () => {
        await expectEveryKeyExpires(client, prefix, Object.keys(options.permanentKeys ?? {}));
        expectNoCredentialAtRest(await credentialsInRedis(client, prefix));
      })().catch((error: unknown) => error);
      await deleteByPrefix(client, prefix);
      await Promise.all([client, ...extra].map((c) => c.quit().catch(() => c.disconnect())));
      if (failure) throw failure;
    },
  };
}

/** A PostgreSQL database that only this fixture uses. */
export interface PostgresFixture extends AsyncDisposable {
  /** Connection string of the private database. */
  readonly url: string;
  /** `database` on a shared server; `embedded` when the whole engine is private to this process. */
  readonly isolation: 'database' | 'embedded';
}

/**
 * A fresh, empty database on the resolved server, dropped on dispose. On the embedded engine the
 * engine itself is fresh and private, so its default database is used and the engine (only it) is stopped.
 * Before that, dispose checks *no credential at rest*: a credential recorded with `recordCredential`
 * found in any table is an InvariantError, thrown once the database is gone.
 */
export async function usePostgres(): Promise<PostgresFixture> {
  const svc = await resolveService('postgres');
  const embedded = svc.provider === 'embedded';
  const name = `labs_test_${uniqueId()}`;
  const url = embedded ? svc.url : await ensureDatabase(svc.url, name);
  return {
    url,
    isolation: embedded ? 'embedded' : 'database',
    async [Symbol.asyncDispose]() {
      const failure: unknown = await credentialsInPostgres(url)
        .then(expectNoCredentialAtRest)
        .catch((error: unknown) => error);
      await (embedded ? stopService('postgres') : dropDatabase(svc.url, name));
      if (failure) throw failure;
    },
  };
}

/** RabbitMQ names private to this fixture; the queues and exchanges it named are deleted on dispose. */
export interface RabbitFixture extends AsyncDisposable {
  readonly url: string;
  /** A unique queue or exchange name built from `base`, remembered for cleanup. */
  name(base: string): string;
}

/** Resolves RabbitMQ and hands out unique queue/exchange names, deleted on dispose. */
export async function useRabbitMQ(): Promise<RabbitFixture> {
  const { url } = await resolveService('rabbitmq');
  const id = uniqueId();
  const names: string[] = [];
  return {
    url,
    name(base) {
      const n = `labs.test.${id}.${base}`;
      names.push(n);
      return n;
    },
    async [Symbol.asyncDispose]() {
      if (names.length === 0) return;
      const connection = await amqp.connect(url);
      try {
        for (const n of names) {
          // A channel closes on the first error (e.g. deleting what does not exist), so one per name.
          const channel = await connection.createChannel();
          await channel.deleteQueue(n).catch(() => undefined);
          const again = await connection.createChannel().catch(() => undefined);
          await again?.deleteExchange(n).catch(() => undefined);
          await Promise.all([channel.close().catch(() => undefined), again?.close().catch(() => undefined)]);
        }
      } finally {
        await connection.close();
      }
    },
  };
}

/** Kafka topic and group names private to this fixture, and the kafkajs clients it hands out. */
export interface KafkaFixture extends AsyncDisposable {
  /** The broker list, as kafkajs takes it. */
  readonly brokers: string[];
  /** A kafkajs client for those brokers. Clients made from it directly are the test's to disconnect. */
  readonly kafka: Kafka;
  /** Every topic and group name this fixture hands out starts with it; dispose deletes them all. */
  readonly prefix: string;
  /** A topic name private to this fixture, built from `base` (also for topics a producer auto-creates). */
  topic(base: string): string;
  /** A consumer group id private to this fixture, built from `base`. */
  groupId(base: string): string;
  /** A connected producer, disconnected on dispose. */
  producer(config?: ProducerConfig): Promise<Producer>;
  /** A connected consumer in `groupId` (use {@link KafkaFixture.groupId}), disconnected on dispose. */
  consumer(groupId: string, config?: Omit<ConsumerConfig, 'groupId'>): Promise<Consumer>;
  /** A connected admin client, disconnected on dispose. */
  admin(): Promise<Admin>;
}

/** Options for {@link useKafka}. */
export interface KafkaFixtureOptions {
  /** kafkajs' own logging; off by default, since every failure also rejects the call that caused it. */
  logLevel?: kafkaLogLevel;
}

/**
 * Resolves Kafka and hands out private topic and group names and kafkajs clients. On dispose, even
 * after a failed test, it disconnects every client it handed out, then deletes every topic and group
 * under its prefix.
 */
export async function useKafka(options: KafkaFixtureOptions = {}): Promise<KafkaFixture> {
  const { url } = await resolveService('kafka');
  const brokers = url.split(',').map((b) => b.trim());
  const kafka = new Kafka({ clientId: 'labs-test', brokers, logLevel: options.logLevel ?? kafkaLogLevel.NOTHING });
  // Dashes, not dots: Kafka warns that '.' and '_' in topic names collide in its metric names.
  const prefix = `labs-test-${uniqueId()}-`;
  const clients: { disconnect(): Promise<void> }[] = [];
  const track = async <T extends { connect(): Promise<void>; disconnect(): Promise<void> }>(client: T): Promise<T> => {
    clients.push(client);
    await client.connect();
    return client;
  };
  return {
    brokers,
    kafka,
    prefix,
    topic: (base) => `${prefix}${base}`,
    groupId: (base) => `${prefix}${base}`,
    // The default partitioner, chosen explicitly: kafkajs otherwise warns about its v2 change on every producer.
    producer: (config = {}) => track(kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, ...config })),
    // A short fetch wait: disconnecting waits for the fetch in flight, 5 s by default.
    consumer: (groupId, config = {}) => track(kafka.consumer({ maxWaitTimeInMs: 500, ...config, groupId })),
    admin: () => track(kafka.admin()),
    async [Symbol.asyncDispose]() {
      // Consumers first: a group can only be deleted once it has no members.
      await Promise.allSettled(clients.map((c) => c.disconnect()));
      const admin = kafka.admin();
      await admin.connect();
      try {
        const topics = (await admin.listTopics()).filter((t) => t.startsWith(prefix));
        if (topics.length > 0) await admin.deleteTopics({ topics });
        const { groups } = await admin.listGroups();
        const ids = groups.map((g) => g.groupId).filter((g) => g.startsWith(prefix));
        // Best effort: a member that failed to leave keeps its group non-empty until its session times
        // out, and an idle group's offsets expire on their own anyway.
        if (ids.length > 0) await admin.deleteGroups(ids).catch(() => undefined);
      } finally {
        await admin.disconnect();
      }
    },
  };
}
