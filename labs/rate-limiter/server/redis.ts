/**
 * The Redis connection a rate limiter should get. A limiter sits in front of every request, so it must
 * never make a request wait long: commands time out after 250 ms, and while the connection is down
 * commands fail at once instead of queueing until it comes back.
 */
import type { RedisOptions } from 'ioredis';

/** How long one rate-limit decision may wait for Redis. */
export const LIMITER_TIMEOUT_MS = 250;

/** The client options above, for `context.redis()` (a test's proxy in front of Redis: `url` too). */
export const LIMITER_REDIS_OPTIONS: RedisOptions = {
  commandTimeout: LIMITER_TIMEOUT_MS,
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
};
