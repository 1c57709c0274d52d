/** The lab's configuration from the environment, checked so a typo is a message, not a surprise. */

export interface RateLimitConfig {
  limit: number;
  windowMs: number;
}

/**
 * Upper bounds that keep the limiter's arithmetic exact: it works in epoch microseconds, which must
 * stay below 2^53 with a whole window added. A window longer than a day is a quota, not a rate limit.
 */
const MAX_LIMIT = 1_000_000_000;
const MAX_WINDOW_MS = 86_400_000;

/** Reads RATE_LIMIT_MAX (default 10) and RATE_LIMIT_WINDOW_MS (default 60000). Throws a readable Error. */
export function readConfig(env: NodeJS.ProcessEnv = process.env): RateLimitConfig {
  return {
    limit: positiveInt(env, 'RATE_LIMIT_MAX', 10, MAX_LIMIT),
    windowMs: positiveInt(env, 'RATE_LIMIT_WINDOW_MS', 60_000, MAX_WINDOW_MS),
  };
}

function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new Error(`${name} must be a whole number from 1 to ${max}, got "${raw}"`);
  }
  return value;
}
