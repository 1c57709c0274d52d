/**
 * Per-test-file isolation on shared servers: each fixture owns a unique namespace (key prefix,
 * database, queue names) and removes it on dispose, so tests leave the servers as they found them.
 *
 *   await using redis = await useRedis();
 */
import amqp from 'amqplib';
import type { Redis } from 'ioredis';
import { uniqueId } from '@labs/lab-kit';
import {
  createRedisClient,
  deleteByPrefix,
  dropDatabase,
  ensureDatabase,
  resolveService,
  stopService,
} from '@labs/services';

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
  const url = await ensureDatabase(svc.url, name);
  return { url, isolation: 'database', [Symbol.asyncDispose]: () => dropDatabase(svc.url, name) };
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
