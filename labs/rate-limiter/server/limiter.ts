/**
 * The contract every rate limiter in this lab implements: the starter, the solution, and the
 * rate-limiter-flexible adapter in the load script. The middleware only ever talks to this.
 */
import type { Redis } from 'ioredis';

/** The verdict on one request. Times are in milliseconds. */
export interface Decision {
  allowed: boolean;
  /** The most requests a client may make in one window. */
  limit: number;
  /** How many more requests would be allowed right now. */
  remaining: number;
  /** Until the client's allowance is fully restored. */
  resetMs: number;
  /** When denied: how long until one more request would be allowed (0 when allowed). */
  retryAfterMs: number;
}

/** What a limiter is built from. */
export interface RateLimiterOptions {
  /** Shared Redis connection. The naive starter ignores it; that is the bug. */
  redis: Redis;
  /** At most `limit` requests ... */
  limit: number;
  /** ... per `windowMs` milliseconds, per client. */
  windowMs: number;
  /** Prefix for every Redis key, so tests and apps never collide. */
  prefix: string;
  /** A clock in epoch ms. Tests pass a fake one; without it, use the server's clock. */
  now?: () => number;
  /**
   * For a limiter that remembers denied clients in memory (to answer them without a round trip): the
   * most it may remember at once; without it, at most {@link DEFAULT_MAX_DENIED}. A limiter without
   * such a memory ignores it.
   */
  maxDenied?: number;
}

/**
 * The most denied clients a limiter may remember when its options do not say (the API builds its
 * limiter so): a flood of made-up API keys must not grow the process's memory without a bound.
 */
export const DEFAULT_MAX_DENIED = 10_000;

/** Decides, per client id, whether one more request is allowed, and records it if so. */
export interface RateLimiter {
  consume(clientId: string): Promise<Decision>;
}
