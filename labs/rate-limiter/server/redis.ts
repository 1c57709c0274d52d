/**
 * The Redis connection a rate limiter should get. A limiter sits in front of every request, so it must
 * never make a request wait long: a decision waits at most LIMITER_TIMEOUT_MS, and none at all while
 * Redis is down (the kit's failFastRedis: no offline queue, no retries).
 */
import { failFastRedis } from '@labs/lab-kit';

/** How long one rate-limit decision may wait for Redis. */
export const LIMITER_TIMEOUT_MS = 250;

/** For `context.redis()` (a test's proxy in front of Redis: `url` too) or `createRedisClient`. */
export const LIMITER_REDIS_OPTIONS = failFastRedis(LIMITER_TIMEOUT_MS);
