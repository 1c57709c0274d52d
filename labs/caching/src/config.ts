/** The lab's configuration from the environment, checked so a typo is a message, not a surprise. */
import { CURRENT_SCHEMA_VERSION } from './users.ts';

export interface CachingConfig {
  port: number;
  /** CACHE_TTL_MS: the longest an entry may live. */
  ttlMs: number;
  /** SCHEMA_VERSION: set it to 1 to play the previous deployment. */
  schemaVersion: number;
  /** SEED_USERS: users 1..n exist at start. */
  seedUsers: number;
}

/** Reads PORT (3000), CACHE_TTL_MS (60000), SCHEMA_VERSION (current), SEED_USERS (10000). Throws a readable Error. */
export function readConfig(env: NodeJS.ProcessEnv = process.env): CachingConfig {
  return {
    port: wholeNumber(env, 'PORT', 3000, 0, 65_535),
    ttlMs: wholeNumber(env, 'CACHE_TTL_MS', 60_000, 1, 86_400_000),
    schemaVersion: wholeNumber(env, 'SCHEMA_VERSION', CURRENT_SCHEMA_VERSION, 1, CURRENT_SCHEMA_VERSION),
    seedUsers: wholeNumber(env, 'SEED_USERS', 10_000, 0, 1_000_000),
  };
}

function wholeNumber(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be a whole number from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}
