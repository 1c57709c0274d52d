/** The lab's configuration from the environment, checked so a typo is a message, not a surprise. */

export interface RateLimitConfig {
  limit: number;
  windowMs: number;
}

/** Reads RATE_LIMIT_MAX (default 10) and RATE_LIMIT_WINDOW_MS (default 60000). Throws a readable Error. */
export function readConfig(env: NodeJS.ProcessEnv = process.env): RateLimitConfig {
  return {
    limit: positiveInt(env, 'RATE_LIMIT_MAX', 10),
    windowMs: positiveInt(env, 'RATE_LIMIT_WINDOW_MS', 60_000),
  };
}

function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new Error(`${name} must be a positive whole number, got "${raw}"`);
  }
  return value;
}
