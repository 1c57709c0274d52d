/**
 * The Redis connection a rate limiter should get. A limiter sits in front of every request, so it must
 * never make a request wait long: commands time out after 250 ms, and while the connection is down
 * commands fail at once instead of queueing until it comes back.
 */
import type { Redis, RedisOptions } from 'ioredis';
import { createRedisClient } from '@labs/services';

/** How long one rate-limit decision may wait for Redis. */
export const LIMITER_TIMEOUT_MS = 250;

/** The client options above, for `context.redis()` and for {@link connectLimiterRedis}. */
export const LIMITER_REDIS_OPTIONS: RedisOptions = {
  commandTimeout: LIMITER_TIMEOUT_MS,
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
};

/** A limiter's client for `url` (a test's proxy in front of Redis, say); the caller closes it. */
export function connectLimiterRedis(url: string): Redis {
  return createRedisClient(url, LIMITER_REDIS_OPTIONS);
}
