/** The rate-limiter lab, described once: `lab serve`, the spec and the load script all start it from here. */
import type { RequestHandler } from 'express';
import { createRateLimiter } from '#rate-limiter';
import { defineLab, secretSetting, wholeNumber, z } from '@labs/lab-kit';
import { type AppDeps, createApp } from './app.ts';
import type { RateLimiter, RateLimiterOptions } from './limiter.ts';
import { LIMITER_REDIS_OPTIONS } from './redis.ts';

/**
 * Upper bounds that keep the limiter's arithmetic exact: it works in epoch microseconds, which must
 * stay below 2^53 with a whole window added. A window longer than a day is a quota, not a rate limit.
 */
const MAX_LIMIT = 1_000_000_000;
const MAX_WINDOW_MS = 86_400_000;

/**
 * What a spec or load script may set instead of the configuration: the limiter's `limit`, `windowMs`,
 * a fake clock `now`, a `prefix` (instances that share one share a limit; default: this start's own)
 * and a Redis client of the caller's (one behind a stalling proxy, say; default: a new one).
 */
export interface RateLimiterLabOptions
  extends Pick<RateLimiterOptions, 'limit' | 'windowMs' | 'now' | 'prefix' | 'redis'>,
    Pick<AppDeps, 'instance'> {
  /**
   * What limits the API instead of #rate-limiter: another limiter (the starter and the solution side by
   * side), a peer library's Express middleware, or null for none at all (the load script's ceiling).
   */
  limitWith: RateLimiter | RequestHandler | null;
}

export default defineLab({
  config: z.object({
    RATE_LIMIT_MAX: wholeNumber({ fallback: 10, min: 1, max: MAX_LIMIT }),
    RATE_LIMIT_WINDOW_MS: wholeNumber({ fallback: 60_000, min: 1, max: MAX_WINDOW_MS }),
    // Names API keys in Redis (an HMAC); every instance that shares limits needs the same one.
    RATE_LIMIT_KEY_SECRET: secretSetting(),
  }),
  async build(context, options: Partial<RateLimiterLabOptions>) {
    const limit = options.limit ?? context.config.RATE_LIMIT_MAX;
    const windowMs = options.windowMs ?? context.config.RATE_LIMIT_WINDOW_MS;
    const ownLimiter = async () =>
      createRateLimiter({
        redis: options.redis ?? (await context.redis(LIMITER_REDIS_OPTIONS)),
        limit,
        windowMs,
        prefix: options.prefix ?? context.prefix,
        now: options.now,
      });
    const limitWith = options.limitWith === undefined ? await ownLimiter() : options.limitWith;
    return {
      app: createApp({
        limiter: limitWith ?? undefined,
        limit,
        windowMs,
        instance: options.instance,
        apiKeySecret: context.config.RATE_LIMIT_KEY_SECRET,
      }),
      usage: (url) => [
        `Limit: ${limit} requests per ${windowMs} ms per client (X-API-Key, else IP)`,
        ...(context.config.RATE_LIMIT_KEY_SECRET
          ? []
          : [
              "Note:  RATE_LIMIT_KEY_SECRET is unset: API keys are hashed with this process's own secret (one instance only)",
            ]),
        `Try:   for i in $(seq 1 ${limit + 2}); do curl -s -o /dev/null -w '%{http_code} ' -H 'X-API-Key: demo' ${url}/api/quote; done; echo`,
      ],
    };
  },
});
