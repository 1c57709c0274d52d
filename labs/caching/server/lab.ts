/**
 * The caching lab, described once: `lab serve`, the spec and the load script all start it from here.
 * Config: CACHE_TTL_MS (default 60000), SCHEMA_VERSION (default: the current one; 1 plays the previous
 * deployment), SEED_USERS (users 1..n that `lab serve` creates, default 10000).
 */
import type { Redis, RedisOptions } from 'ioredis';
import type pg from 'pg';
import { createUserCache } from '#user-cache';
import { atMostEvery, defineLab, type LabContext, wholeNumber, z } from '@labs/lab-kit';
import { type AppDeps, createApp } from './app.ts';
import type { UserCache, UserCacheOptions } from './cache.ts';
import { createUserRepository, prepareDatabase, type UserRepository } from './user-repository.ts';
import { CURRENT_SCHEMA_VERSION } from './users.ts';

/**
 * The cache's Redis connection. A cache is an optimisation, so it must never make a request wait for
 * longer than the database would take: while the connection is down a command fails at once instead of
 * queueing until Redis is back (no offline queue), and a Redis that stops answering costs a request at
 * most 250 ms (the command timeout) before the cache answers from the database instead.
 */
export const CACHE_REDIS_OPTIONS: RedisOptions = {
  enableOfflineQueue: false,
  commandTimeout: 250,
  maxRetriesPerRequest: 0,
};

/**
 * The API's PostgreSQL pool. Every query the API sends is a primary-key lookup or a one-row upsert, so
 * seconds are already a stall: the server cancels a statement after 2 s (`statement_timeout`, which
 * also ends a wait for a row lock), the client gives up after 2.5 s even when the server cannot answer
 * at all (`query_timeout`: a frozen or unreachable host), and waiting for a connection is bounded too.
 * The routes answer each of these failures with a 503 and Retry-After (server/app.ts).
 */
export const DATABASE_POOL_OPTIONS: pg.PoolConfig = {
  statement_timeout: 2000,
  query_timeout: 2500,
  connectionTimeoutMillis: 2000,
};

const config = z.object({
  CACHE_TTL_MS: wholeNumber({ fallback: 60_000, min: 1, max: 86_400_000 }),
  SCHEMA_VERSION: wholeNumber({ fallback: CURRENT_SCHEMA_VERSION, min: 1, max: CURRENT_SCHEMA_VERSION }),
  SEED_USERS: wholeNumber({ fallback: 10_000, min: 0, max: 1_000_000 }),
});
export type CachingConfig = z.infer<typeof config>;

/** What a spec or load script may set instead of the configuration. */
export interface CachingLabOptions {
  /**
   * The pool every query goes through (a spec counts them on it). Default: a new one on this start's
   * database, with DATABASE_POOL_OPTIONS.
   */
  pool: pg.Pool;
  /** A Redis client of the caller's (a closed one plays an outage). Default: a new one, with CACHE_REDIS_OPTIONS. */
  redis: Redis;
  /** The key prefix; instances that share one share a cache. Default: this start's own. */
  prefix: string;
  /** The deployment this instance belongs to. */
  schemaVersion: number;
  ttlMs: number;
  /** Users 1..n the first build of a start creates. Default: SEED_USERS for `lab serve`, none otherwise. */
  seedUsers: number;
  /** Shown as X-Instance, so a learner sees which instance answered. Default: `port-<its port>`. */
  instance: string;
  /** Wraps the repository the cache reads and writes through (a test holds a call with it). */
  wrapRepository: (repository: UserRepository) => UserRepository;
  /** Receives the Redis failures the cache reports. Default: a warning, at most every 5 s. */
  onCacheError: (error: Error) => void;
  /** Receives the unexpected errors behind a 500. Default: the log. */
  onError: (error: Error) => void;
  /** Receives the outages behind a 503 (a service down or stalled), a line at most every 5 s. Default: a warning. */
  onOutage: (line: string) => void;
  /**
   * Makes the cache instead of #user-cache: the load script measures the starter, the solution and no
   * cache at all side by side in one process.
   */
  createCache: (options: UserCacheOptions) => UserCache;
  /** Told of every read the API answered, and where from (the load script's hit ratio). */
  onLookup: AppDeps['onLookup'];
}

/**
 * The database is prepared (table, seed users) once per start, however many instances a spec builds
 * on it: like one deployment's migration, not one per process.
 */
const prepared = new WeakMap<LabContext<CachingConfig>, Promise<void>>();

function prepareOnce(context: LabContext<CachingConfig>, pool: pg.Pool, seedUsers: number): Promise<void> {
  let done = prepared.get(context);
  if (!done) {
    done = prepareDatabase(pool, seedUsers);
    done.catch(() => prepared.delete(context)); // a failed attempt is tried again by the next build
    prepared.set(context, done);
  }
  return done;
}

export default defineLab<CachingConfig, CachingLabOptions>({
  config,
  async build(context, options) {
    const { config } = context;
    const schemaVersion = options.schemaVersion ?? config.SCHEMA_VERSION;
    const ttlMs = options.ttlMs ?? config.CACHE_TTL_MS;
    const seedUsers = options.seedUsers ?? (context.purpose === 'serve' ? config.SEED_USERS : 0);
    const prefix = options.prefix ?? context.prefix;
    const pool = options.pool ?? (await context.database(DATABASE_POOL_OPTIONS));
    await prepareOnce(context, pool, seedUsers);
    const redis = options.redis ?? (await context.redis(CACHE_REDIS_OPTIONS));
    const wrap = options.wrapRepository ?? ((repository) => repository);
    const cache = (options.createCache ?? createUserCache)({
      repository: wrap(createUserRepository(pool, schemaVersion)),
      redis,
      prefix,
      schemaVersion,
      ttlMs,
      // One line at most every 5 s keeps the log readable during an outage.
      onCacheError:
        options.onCacheError ??
        atMostEvery(5000, (error: Error) =>
          console.warn(`[caching] Redis failed, answering from the database: ${error.message}`),
        ),
    });
    const { instance, onLookup, onError, onOutage } = options;
    const app = createApp({ cache, instance, onLookup, onError, onOutage });
    const database = new URL(pool.options.connectionString ?? 'postgres:///').pathname.slice(1);
    return {
      app,
      usage: (url) => [
        `${seedUsers > 0 ? `Users 1..${seedUsers}` : 'Users'} in PostgreSQL${database ? ` (database ${database})` : ''}, cached in Redis under ${prefix}`,
        `Schema version ${schemaVersion}, TTL ${ttlMs} ms. Run a second one (--port 3001) to see instances share the cache.`,
        'Try:',
        `  curl -i ${url}/users/42                  # run it twice: X-Cache: miss, then hit`,
        `  curl -i -X PUT ${url}/users/42 -H 'content-type: application/json' -d '{"name":"Ada Lovelace","email":"ada@example.com"}'`,
        `  curl -i ${url}/users/42                  # the new name, or the old one?`,
        `  curl -i ${url}/users/0                   # 400`,
        `  curl -i ${url}/users/99999999            # 404`,
      ],
    };
  },
});
