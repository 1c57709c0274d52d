/**
 * WRONG FIX: the count moves into Redis, read with GET and written back with SET.
 *
 * Every instance now sees one count, so it looks shared. But the read and the write are two round
 * trips: under a burst, many requests GET the same count before any of them SETs it, all decide
 * "allowed", and the limit is exceeded by however many requests overlapped. The check and the update
 * must be one atomic step on the server (a Lua script, or INCR whose reply is the new count).
 *
 * @catches 100 parallel requests across three instances admit exactly the limit
 * @catches three instances, each reaching Redis through a jittery network, admit exactly the limit
 * @catches three instances sharing one Redis admit no more than the limit under a concurrent burst
 */
import type { Decision, RateLimiter, RateLimiterOptions } from '../../server/limiter.ts';

export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const { redis, limit, windowMs, prefix, now = Date.now } = options;
  return {
    async consume(clientId: string): Promise<Decision> {
      const time = now();
      const windowStart = Math.floor(time / windowMs) * windowMs;
      const key = `${prefix}${clientId}:${windowStart}`;
      const count = Number((await redis.get(key)) ?? 0);
      const resetMs = windowStart + windowMs - time;
      if (count >= limit) return { allowed: false, limit, remaining: 0, resetMs, retryAfterMs: resetMs };
      await redis.set(key, count + 1, 'PX', windowMs);
      return { allowed: true, limit, remaining: limit - count - 1, resetMs, retryAfterMs: 0 };
    },
  };
}
