/**
 * The servers the load script measures, started in their own process by forkServers(). Each target
 * is two app instances sharing one cache, over its own database of seeded users:
 * - no-cache: every read is a SELECT (the baseline a cache must beat);
 * - starter and solution: src/user-cache.ts and solution/user-cache.ts, their caches warmed first.
 *
 * The services are wherever REDIS_URL and DATABASE_URL point: the load script hands this process the
 * latency proxy's addresses when it puts a service at a distance.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { stopServices } from '@labs/services';
import { type OpenLab, openLab } from '@labs/lab-kit';
import { createApp } from '../server/app.ts';
import type { UserCache, UserCacheOptions } from '../server/cache.ts';
import cachingLab, { CACHE_REDIS_OPTIONS, type CachingConfig, DATABASE_POOL_OPTIONS } from '../server/lab.ts';
import { createUserRepository, prepareDatabase, type Queryable } from '../server/user-repository.ts';
import { CURRENT_SCHEMA_VERSION } from '../server/users.ts';
import { createUserCache as starterCache } from '../src/user-cache.ts';
import { createUserCache as solutionCache } from '../solution/user-cache.ts';

export interface BenchServerOptions {
  users: number;
  instances: number;
  ttlMs: number;
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
  const { users, instances, ttlMs } = options;
  const counters: Record<string, number> = {};
  const urls: Record<string, string> = {};
  // One start of the lab per target: its own database (seeded here, dropped afterwards) and its own
  // key prefix (deleted afterwards), so no target reads what another wrote.
  const labs: OpenLab<CachingConfig>[] = [];
  const close = async () => {
    for (const lab of labs) await lab.close();
    await stopServices();
  };

  console.log(`  seeding ${users.toLocaleString('en-US')} users per target and warming the caches ...`);
  try {
    for (const target of TARGETS) {
      const lab = await openLab(cachingLab, { purpose: 'bench' });
      labs.push(lab);
      // The clients `lab serve` gives the API: the timeouts are part of what is measured.
      const pool = await lab.context.database({ ...DATABASE_POOL_OPTIONS, max: 10 });
      await prepareDatabase(pool, users);
      const db = countingReads(pool, counters, `${target}.dbReads`);
      for (let i = 0; i < instances; i++) {
        const cache = BUILDERS[target]({
          repository: createUserRepository(db, CURRENT_SCHEMA_VERSION),
          redis: await lab.context.redis(CACHE_REDIS_OPTIONS),
          prefix: lab.context.prefix,
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
        urls[`${target}#${i}`] = (await lab.context.listen(app)).url;
      }
    }
  } catch (error) {
    await close();
    throw error;
  }

  // How late this process's event loop ran since the previous stats() call (the load script calls it
  // before and after each run): all the instances share it, so on a busy machine, or at more requests
  // than one CPU can answer, requests queue here whatever the cache does. The histogram records each
  // interval of a 10 ms timer; what exceeds 10 ms is the lag.
  const RESOLUTION_MS = 10;
  const loop = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  loop.enable();
  const lagMs = (ns: number) => Math.max(0, ns / 1e6 - RESOLUTION_MS);
  const stats = () => {
    const figures = { ...counters, 'loop.lagP99Ms': lagMs(loop.percentile(99)), 'loop.lagMaxMs': lagMs(loop.max) };
    loop.reset();
    return figures;
  };
  return {
    urls,
    stats,
    close: async () => {
      loop.disable();
      await close();
    },
  };
}
