/**
 * The Redis connection a rate limiter should get. A limiter sits in front of every request, so it must
 * never make a request wait long: commands time out after 250 ms, and while the connection is down
 * commands fail at once instead of queueing until it comes back.
 */
import type { Redis } from 'ioredis';
import { createRedisClient } from '@labs/services';

/** How long one rate-limit decision may wait for Redis. */
export const LIMITER_TIMEOUT_MS = 250;

export function connectLimiterRedis(url: string): Redis {
  return createRedisClient(url, {
    commandTimeout: LIMITER_TIMEOUT_MS,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
  });
}
