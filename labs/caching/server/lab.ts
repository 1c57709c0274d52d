/**
 * The caching lab, described once: `lab serve`, the spec and the load script all start it from here.
 * Config: CACHE_TTL_MS (default 60000), SCHEMA_VERSION (default: the current one; 1 plays the previous
 * deployment), SEED_USERS (users 1..n that `lab serve` creates, default 10000).
 */
import type pg from 'pg';
import { createUserCache } from '#user-cache';
import { atMostEvery, boundedPool, defineLab, failFastRedis, wholeNumber, z } from '@labs/lab-kit';
import { type AppDeps, createApp } from './app.ts';
import type { UserCache, UserCacheOptions } from './cache.ts';
import { createUserRepository, prepareDatabase, type UserRepository } from './user-repository.ts';
import { CURRENT_SCHEMA_VERSION } from './users.ts';

/**
 * The cache's Redis connection. A cache is an optimisation, so it must never make a request wait for
 * longer than the database would take: while the connection is down a command fails at once, and a
 * Redis that stops answering costs a request at most 250 ms before the cache answers from the database.
 */
export const CACHE_REDIS_OPTIONS = failFastRedis(250);

/**
 * The API's PostgreSQL pool. Every query the API sends is a primary-key lookup or a one-row upsert, so
 * seconds are already a stall: 2 s for a statement (which also ends a wait for a row lock), 2.5 s for a
 * server that cannot answer at all, 2 s to wait for a connection; each is a 503 with Retry-After.
 */
export const DATABASE_POOL_OPTIONS = boundedPool({ statementMs: 2000, answerMs: 2500, connectMs: 2000 });

const config = z.object({
  CACHE_TTL_MS: wholeNumber({ fallback: 60_000, min: 1, max: 86_400_000 }),
  SCHEMA_VERSION: wholeNumber({ fallback: CURRENT_SCHEMA_VERSION, min: 1, max: CURRENT_SCHEMA_VERSION }),
  SEED_USERS: wholeNumber({ fallback: 10_000, min: 0, max: 1_000_000 }),
});
export type CachingConfig = z.infer<typeof config>;

/**
 * What a spec or load script may set instead of the configuration: the cache's options (`redis`, by
 * default a new client with CACHE_REDIS_OPTIONS, a closed one plays an outage; `prefix`, by default
 * this start's own, instances that share one share a cache; `schemaVersion`, the deployment this
 * instance belongs to; `ttlMs`; `onCacheError`, by default a warning at most every 5 s) and the app's.
 */
export interface CachingLabOptions
  extends Pick<UserCacheOptions, 'redis' | 'prefix' | 'schemaVersion' | 'ttlMs' | 'onCacheError'>,
    Omit<AppDeps, 'cache'> {
  /** The pool every query goes through (a spec counts them on it). Default: a new one, DATABASE_POOL_OPTIONS. */
  pool: pg.Pool;
  /** Users 1..n the first build of a start creates. Default: SEED_USERS for `lab serve`, none otherwise. */
  seedUsers: number;
  /** Wraps the repository the cache reads and writes through (a test holds a call with it). */
  wrapRepository: (repository: UserRepository) => UserRepository;
  /** Makes the cache instead of #user-cache: the load script measures the starter, the solution and none side by side. */
  createCache: (options: UserCacheOptions) => UserCache;
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
    // Once per start, however many instances a spec builds on it: like one deployment's migration.
    await context.once('users table', () => prepareDatabase(pool, seedUsers));
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
    const app = createApp({ ...options, cache });
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
