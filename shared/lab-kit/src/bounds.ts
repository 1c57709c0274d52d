/**
 * How long a request may wait on a service, said once: the options that make a Redis client or a
 * PostgreSQL pool fail within a bound instead of hanging, so an outage becomes a prompt 503 (or a
 * lab's fallback) rather than requests piling up behind a dead connection.
 */
import type { RedisOptions } from 'ioredis';
import type pg from 'pg';

/**
 * A Redis client's options for work that must never make a request wait long (a cache, a rate
 * limiter: optional steps in front of every request). A command fails after `commandTimeoutMs`; while
 * the connection is down it fails at once instead of queueing until Redis is back (no offline queue)
 * and is not sent again (no retries). Pass them to `context.redis()` or `createRedisClient`.
 */
export function failFastRedis(commandTimeoutMs: number): RedisOptions {
  return { commandTimeout: commandTimeoutMs, enableOfflineQueue: false, maxRetriesPerRequest: 0 };
}

/** The three waits {@link boundedPool} bounds, in milliseconds. */
export interface PoolBounds {
  /** The server cancels a statement (`statement_timeout`, SQLSTATE 57014; it also ends a wait for a row lock); the connection stays usable. */
  statementMs: number;
  /** The client gives up on a server that cannot answer at all, a frozen host (`query_timeout`); pg-pool then drops the connection. Longer than `statementMs`, so the server's own cancel comes first. */
  answerMs: number;
  /** Opening a connection, or waiting for one of the pool's (`connectionTimeoutMillis`). */
  connectMs: number;
}

/**
 * A PostgreSQL pool's options for an API: every wait on the database is bounded, so one that is down
 * or stalled costs a request seconds and a 503 (`isPostgresOutage` recognises each of these errors),
 * never a hang. Work that runs longer than a request should (seeding, an index build) gets a pool
 * without them, or {@link setupTransaction}.
 */
export function boundedPool(bounds: PoolBounds): pg.PoolConfig {
  return {
    statement_timeout: bounds.statementMs,
    query_timeout: bounds.answerMs,
    connectionTimeoutMillis: bounds.connectMs,
  };
}
