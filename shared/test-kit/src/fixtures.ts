/**
 * Per-test-file isolation on shared servers: each fixture owns a unique namespace (key prefix,
 * database, queue names, topic and group names) and removes it on dispose, so tests leave the servers
 * as they found them.
 *
 *   await using redis = await useRedis();
 */
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RequestListener } from 'node:http';
import { createServer } from 'node:http';
import amqp from 'amqplib';
import type { Redis } from 'ioredis';
import { Kafka, logLevel as kafkaLogLevel, Partitioners, type Admin, type Consumer, type ConsumerConfig, type Producer, type ProducerConfig } from 'kafkajs';
import pg from 'pg';
import { createRedisClient, resolveService, stopService } from '@labs/services';

/** A short random name part; unique enough across parallel test files and re-runs. */
export function uniqueId(): string {
  return `${process.pid.toString(36)}${randomBytes(4).toString('hex')}`;
}

/** A Redis client plus a key prefix that only this fixture uses. */
export interface RedisFixture extends AsyncDisposable {
  readonly url: string;
  readonly client: Redis;
  /** Prefix every key with this; dispose deletes every key under it. */
  readonly prefix: string;
  /** Opens another client on the same server (e.g. one per simulated app instance); closed on dispose. */
  connect(): Redis;
}

/** Resolves Redis and hands out a private key prefix, deleted with its keys on dispose. */
export async function useRedis(): Promise<RedisFixture> {
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
      await deleteByPrefix(client, prefix);
      await Promise.all([client, ...extra].map((c) => c.quit().catch(() => c.disconnect())));
    },
  };
}

/** Deletes every key that starts with `prefix`, with SCAN so a large keyspace never blocks Redis. */
export async function deleteByPrefix(client: Redis, prefix: string): Promise<number> {
  let deleted = 0;
  for await (const keys of client.scanStream({ match: `${prefix}*`, count: 500 }) as AsyncIterable<string[]>) {
    if (keys.length > 0) deleted += await client.unlink(...keys);
  }
  return deleted;
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
 */
export async function usePostgres(): Promise<PostgresFixture> {
  const svc = await resolveService('postgres');
  if (svc.provider === 'embedded') {
    return { url: svc.url, isolation: 'embedded', [Symbol.asyncDispose]: () => stopService('postgres') };
  }
  const name = `labs_test_${uniqueId()}`;
  const admin = new pg.Client({ connectionString: svc.url, connectionTimeoutMillis: 5000 });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(svc.url);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    isolation: 'database',
    async [Symbol.asyncDispose]() {
      const cleanup = new pg.Client({ connectionString: svc.url, connectionTimeoutMillis: 5000 });
      await cleanup.connect();
      try {
        // FORCE ends connections a test forgot to close, so a leak never leaves a database behind.
        await cleanup.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await cleanup.end();
      }
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

/** An HTTP server listening on a free loopback port. */
export interface Listening extends AsyncDisposable {
  /** Base URL, e.g. http://127.0.0.1:43121 */
  readonly url: string;
  readonly server: Server;
}

/** Thrown by {@link listen} when the port asked for is taken; its message names the port to try next. */
export class PortInUseError extends Error {
  override readonly name = 'PortInUseError';
  readonly port: number;
  constructor(port: number) {
    super(`Port ${port} is already in use. Stop what runs there, or try another: --port ${port + 1}`);
    this.port = port;
  }
}

/**
 * Starts `app` (an Express app or any request listener) on 127.0.0.1: on a free port by default (tests,
 * load scripts), or on `port` (`pnpm lab serve`), where a port in use is a {@link PortInUseError}.
 * Closed on dispose. (Not Express 5's `app.listen(port, cb)`: it calls `cb` on errors too.)
 */
export async function listen(app: RequestListener, port = 0): Promise<Listening> {
  const server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => reject(error.code === 'EADDRINUSE' ? new PortInUseError(port) : error));
    server.listen(port, '127.0.0.1', resolve);
  });
  const { port: actual } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${actual}`,
    server,
    async [Symbol.asyncDispose]() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Resolves on Ctrl-C (SIGINT) or SIGTERM: how `pnpm lab serve` waits until it is asked to stop. */
export function untilInterrupted(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
}
