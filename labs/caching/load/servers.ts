/**
 * The servers the load script measures, started in their own process by forkServers(). Each target
 * is two app instances sharing one cache, over its own database of seeded users:
 * - no-cache: every read is a SELECT (the baseline a cache must beat);
 * - starter and solution: src/user-cache.ts and solution/user-cache.ts, their caches warmed first.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { createPgPool, createRedisClient, resolveService, stopServices } from '@labs/services';
import { deleteByPrefix, listen, type Listening } from '@labs/test-kit';
import { createApp } from '../src/app.ts';
import type { UserCache, UserCacheOptions } from '../src/cache.ts';
import { dropDatabase, ensureDatabase } from '../src/database.ts';
import {
  createUserRepository,
  migrate,
  seedUsers,
  type Queryable,
  type UserRepository,
} from '../src/user-repository.ts';
import { CURRENT_SCHEMA_VERSION } from '../src/users.ts';
import { createUserCache as starterCache } from '../src/user-cache.ts';
import { createUserCache as solutionCache } from '../solution/user-cache.ts';

export interface BenchServerOptions {
  users: number;
  instances: number;
  ttlMs: number;
  prefix: string;
}

export const TARGETS = ['no-cache', 'starter', 'solution'] as const;

/** No cache at all: what the API costs when every read is a query. */
function noCache({ repository }: UserCacheOptions): UserCache {
  return {
    async get(id) {
      return { user: await repository.find(id), source: 'database' };
    },
    put: (id, input) => repository.save(id, input),
  };
}

const BUILDERS: Record<(typeof TARGETS)[number], (options: UserCacheOptions) => UserCache> = {
  'no-cache': noCache,
  starter: starterCache,
  solution: solutionCache,
};

/** Counts the SELECTs that reach PostgreSQL. */
function countingReads(db: Queryable, counters: Record<string, number>, key: string): Queryable {
  return {
    query(text: string, values?: unknown[]) {
      if (/^\s*select\b/i.test(text)) counters[key] = (counters[key] ?? 0) + 1;
      return db.query(text, values);
    },
  } as Queryable;
}

/** Reads every user once through `cache`, a few at a time: a cache that has been up for a while. */
async function warm(cache: UserCache, users: number): Promise<void> {
  let next = 1;
  const worker = async () => {
    while (next <= users) await cache.get(next++);
  };
  await Promise.all(Array.from({ length: 32 }, worker));
}

export async function start(options: BenchServerOptions) {
  const { users, instances, ttlMs, prefix } = options;
  const { url: redisUrl } = await resolveService('redis');
  const run = randomBytes(3).toString('hex');
  const counters: Record<string, number> = {};
  const clients: Redis[] = [];
  const pools: pg.Pool[] = [];
  const databases: string[] = [];
  const servers: Listening[] = [];
  const urls: Record<string, string> = {};

  console.log(`  seeding ${users.toLocaleString('en-US')} users per target and warming the caches ...`);
  for (const target of TARGETS) {
    const database = `labs_bench_caching_${target.replace('-', '_')}_${run}`;
    databases.push(database);
    const pool = createPgPool(await ensureDatabase(database), { max: 10 });
    pools.push(pool);
    await migrate(pool);
    await seedUsers(pool, users);
    const db = countingReads(pool, counters, `${target}.dbReads`);
    for (let i = 0; i < instances; i++) {
      const redis = createRedisClient(redisUrl);
      clients.push(redis);
      const repository: UserRepository = createUserRepository(db, CURRENT_SCHEMA_VERSION);
      const cache = BUILDERS[target]({
        repository,
        redis,
        prefix: `${prefix}${target}:`,
        schemaVersion: CURRENT_SCHEMA_VERSION,
        ttlMs,
      });
      if (i === 0 && target !== 'no-cache') await warm(cache, users);
      const app = createApp({
        cache,
        instance: `${target}-${i + 1}`,
        onLookup: ({ source }) => {
          counters[`${target}.lookups`] = (counters[`${target}.lookups`] ?? 0) + 1;
          if (source === 'cache') counters[`${target}.hits`] = (counters[`${target}.hits`] ?? 0) + 1;
        },
      });
      const server = await listen(app);
      servers.push(server);
      urls[`${target}#${i}`] = server.url;
    }
  }

  return {
    urls,
    stats: () => ({ ...counters }),
    async close() {
      await Promise.all(servers.map((s) => s[Symbol.asyncDispose]()));
      if (clients[0]) await deleteByPrefix(clients[0], prefix);
      await Promise.all(clients.map((c) => c.quit()));
      await Promise.all(pools.map((p) => p.end()));
      for (const database of databases) await dropDatabase(database);
      await stopServices();
    },
  };
}
