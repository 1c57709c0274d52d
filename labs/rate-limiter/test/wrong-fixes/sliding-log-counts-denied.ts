/**
 * WRONG FIX: a sliding log in a sorted set, atomic in one MULTI: drop entries older than the window,
 * add this request, count.
 *
 * It is shared and atomic, and it has no window boundary. But it adds the request before it counts,
 * so a denied request is recorded too: a client that retries while it is over the limit keeps the log
 * full, and is never admitted again for as long as it keeps retrying. Count first, and add only what
 * is admitted (a Lua script), or keep one number per client (GCRA) instead of one entry per request.
 *
 * @catches a client that keeps retrying while denied is admitted again once the window allows it
 */
import { randomUUID } from 'node:crypto';
import type { Decision, RateLimiter, RateLimiterOptions } from '../../server/limiter.ts';

export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const { redis, limit, windowMs, prefix, now = Date.now } = options;
  return {
    async consume(clientId: string): Promise<Decision> {
      const time = now();
      const key = `${prefix}log:${clientId}`;
      const replies = await redis
        .multi()
        .zremrangebyscore(key, 0, time - windowMs)
        .zadd(key, time, `${time}:${randomUUID()}`)
        .zcard(key)
        .pexpire(key, windowMs)
        .exec();
      const count = Number(replies?.[2]?.[1] ?? 0);
      if (count > limit) return { allowed: false, limit, remaining: 0, resetMs: windowMs, retryAfterMs: windowMs };
      return { allowed: true, limit, remaining: limit - count, resetMs: windowMs, retryAfterMs: 0 };
    },
  };
}
