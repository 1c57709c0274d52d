/**
 * The Redis connection a rate limiter should get. A limiter sits in front of every request, so a
 * decision waits at most LIMITER_TIMEOUT_MS, and not at all while Redis is down (failFastRedis).
 */
import { failFastRedis } from '@labs/lab-kit';

/** How long one rate-limit decision may wait for Redis. */
export const LIMITER_TIMEOUT_MS = 250;

/** For `context.redis()` (a test's proxy in front of Redis: `url` too) or `createRedisClient`. */
export const LIMITER_REDIS_OPTIONS = failFastRedis(LIMITER_TIMEOUT_MS);
