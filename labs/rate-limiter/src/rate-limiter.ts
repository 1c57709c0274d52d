/**
 * STARTER: a fixed-window counter in a Map, the one most people write first.
 *
 * It is correct for a single process: Node runs one request handler at a time, so reading and
 * updating the Map can never interleave. It breaks in two ways a production API meets on day one:
 * every app instance keeps its own Map (three instances admit three times the limit), and a client
 * can spend its whole limit at the end of one window and again at the start of the next.
 */
import type { Decision, RateLimiter, RateLimiterOptions } from '../server/limiter.ts';

export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const { limit, windowMs, now = Date.now } = options;
  // TODO(lab): this Map lives in one process. Every instance of the API needs to see the same count.
  const windows = new Map<string, { windowStart: number; count: number }>();

  return {
    async consume(clientId: string): Promise<Decision> {
      const time = now();
      // TODO(lab): windows aligned to the clock let a client send `limit` requests on each side of a boundary.
      const windowStart = Math.floor(time / windowMs) * windowMs;
      let entry = windows.get(clientId);
      if (!entry || entry.windowStart !== windowStart) {
        entry = { windowStart, count: 0 };
        windows.set(clientId, entry);
      }
      const resetMs = windowStart + windowMs - time;
      if (entry.count >= limit) {
        return { allowed: false, limit, remaining: 0, resetMs, retryAfterMs: resetMs };
      }
      entry.count += 1;
      return { allowed: true, limit, remaining: limit - entry.count, resetMs, retryAfterMs: 0 };
    },
  };
}
