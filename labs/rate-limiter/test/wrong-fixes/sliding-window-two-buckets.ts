/**
 * WRONG FIX: a sliding window made of two half-window buckets, the cheap approximation: a client's
 * count is its requests in the current half-window plus the previous one, kept in one Redis hash and
 * checked and counted in one Lua script on Redis's clock.
 *
 * Shared, atomic, one clock, every key expires, and a burst on each side of a window boundary is
 * refused: the burst just before the boundary is still in the previous bucket. But only for half a
 * window. Once the next bucket starts, the burst is forgotten, although it is only a few hundred
 * milliseconds old, and the client gets its whole limit again: twice the limit within one window.
 * Coarse buckets forget a burst as soon as its bucket leaves the sum; the limit must hold for every
 * window, not only those that start on a bucket boundary (GCRA's one timestamp, or a sliding counter
 * that weights the previous window by how much of it still overlaps).
 *
 * @catches after spending its limit just before a window boundary, a client gets back no more than the policy refills, anywhere in the next window
 */
import type { Redis } from 'ioredis';
import type { Decision, RateLimiter, RateLimiterOptions } from '../../server/limiter.ts';

/**
 * KEYS[1]: the client's buckets (a hash: bucket number -> count). ARGV: limit, window ms, now (ms, or
 * -1 for Redis's clock). Returns {allowed, remaining, resetMs, retryAfterMs}.
 */
const TWO_BUCKETS = `
local limit = tonumber(ARGV[1])
local half = tonumber(ARGV[2]) / 2
local now = tonumber(ARGV[3])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local current = math.floor(now / half)
local field = function(n) return string.format('%d', n) end
local counts = redis.call('HMGET', KEYS[1], field(current), field(current - 1))
local mine = tonumber(counts[1]) or 0
local used = mine + (tonumber(counts[2]) or 0)
local next_bucket = (current + 1) * half - now
if used >= limit then
  local wait = next_bucket
  if mine >= limit then wait = next_bucket + half end
  return {0, 0, math.ceil(next_bucket + half), math.ceil(wait)}
end
redis.call('HINCRBY', KEYS[1], field(current), 1)
redis.call('HDEL', KEYS[1], field(current - 2))
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * half + next_bucket))
return {1, limit - used - 1, math.ceil(next_bucket + half), 0}
`;

type BucketRedis = Redis & {
  twoBuckets(key: string, limit: number, windowMs: number, nowMs: number): Promise<[number, number, number, number]>;
};

export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const { redis, limit, windowMs, prefix, now } = options;
  if (!('twoBuckets' in redis)) redis.defineCommand('twoBuckets', { numberOfKeys: 1, lua: TWO_BUCKETS });
  const client = redis as BucketRedis;
  return {
    async consume(clientId: string): Promise<Decision> {
      const [allowed, remaining, resetMs, retryAfterMs] = await client.twoBuckets(
        `${prefix}buckets:${clientId}`,
        limit,
        windowMs,
        now ? now() : -1,
      );
      return { allowed: allowed === 1, limit, remaining, resetMs, retryAfterMs };
    },
  };
}
