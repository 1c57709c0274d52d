/**
 * Clients configured the way production code should be: short timeouts and no endless retries, so a
 * service that goes away shows up as a fast, clear error instead of a hung request.
 */
import { Redis, type RedisOptions } from 'ioredis';
import pg from 'pg';

/** An ioredis client that fails a command after `commandTimeout` ms instead of queueing it forever. */
export function createRedisClient(url: string, options: RedisOptions = {}): Redis {
  return new Redis(url, {
    connectTimeout: 2000,
    commandTimeout: 1000,
    maxRetriesPerRequest: 1,
    // Reconnect with a capped back-off; never give up, the server may come back.
    retryStrategy: (times) => Math.min(times * 100, 2000),
    lazyConnect: false,
    ...options,
  });
}

/**
 * A pg pool with a connection timeout, so an unreachable database fails in seconds. An idle connection
 * the server closes (a restart, a test's `DROP DATABASE ... WITH (FORCE)`) is an 'error' event on the
 * pool, which would crash the process unhandled; the pool already discards that connection and the
 * next query opens a new one, so it is ignored here and failures surface on the queries themselves.
 */
export function createPgPool(connectionString: string, options: pg.PoolConfig = {}): pg.Pool {
  const pool = new pg.Pool({ connectionString, connectionTimeoutMillis: 5000, max: 10, ...options });
  pool.on('error', () => {});
  return pool;
}

/** Deletes every key that starts with `prefix`, with SCAN so a large keyspace never blocks Redis. */
export async function deleteByPrefix(client: Redis, prefix: string): Promise<number> {
  let deleted = 0;
  for await (const keys of client.scanStream({ match: `${prefix}*`, count: 500 }) as AsyncIterable<string[]>) {
    if (keys.length > 0) deleted += await client.unlink(...keys);
  }
  return deleted;
}
