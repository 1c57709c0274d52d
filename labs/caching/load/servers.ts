/**
 * The servers the load script measures, started in their own process by forkServers(). Each target
 * is two app instances sharing one cache, over its own database of seeded users:
 * - no-cache: every read is a SELECT (the baseline a cache must beat);
 * - starter and solution: src/user-cache.ts and solution/user-cache.ts, their caches warmed first.
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
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
export const XH = new Map<string, RecordableHistogram>();
export function xrec(name: string, startMs: number) {
  let h = XH.get(name);
  if (!h) XH.set(name, (h = createHistogram()));
  h.record(Math.max(1, Math.round((performance.now() - startMs) * 1000)));
}
function countingReads(db: Queryable, counters: Record<string, number>, key: string): Queryable {
  return {
    query(text: string, values?: unknown[]) {
      const select = /^\s*select\b/i.test(text);
      if (select) counters[key] = (counters[key] ?? 0) + 1;
      const t = performance.now();
      return db.query(text, values).finally(() => xrec(`${key.split('.')[0]}.q.${select ? 'select' : 'write'}`, t));
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
        const redis = await lab.context.redis(CACHE_REDIS_OPTIONS);
        const cache = BUILDERS[target]({
          repository: createUserRepository(db, CURRENT_SCHEMA_VERSION),
          redis,
          prefix: lab.context.prefix,
          schemaVersion: CURRENT_SCHEMA_VERSION,
          ttlMs,
        });
        // XDIAG: count lease checks (first look after a miss, and each poll of a waiter)
        const r = redis as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
        const orig = r.readOrLease;
        if (orig) {
          r.readOrLease = function (this: unknown, ...a: unknown[]) {
            counters[`${target}.leaseChecks`] = (counters[`${target}.leaseChecks`] ?? 0) + 1;
            return orig.apply(this, a).then((v) => {
              const state = (v as [number])[0];
              counters[`${target}.lease${state}`] = (counters[`${target}.lease${state}`] ?? 0) + 1;
              return v;
            });
          };
        }
        if (i === 0 && target !== 'no-cache') await warm(cache, users);
        const origGet = cache.get.bind(cache);
        cache.get = async (id) => {
          const t = performance.now();
          const lookup = await origGet(id);
          xrec(`${target}.get.${lookup.source}`, t);
          return lookup;
        };
        const origPut = cache.put.bind(cache);
        cache.put = async (id, input) => {
          const t = performance.now();
          const r = await origPut(id, input);
          xrec(`${target}.put`, t);
          return r;
        };
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

  // How late this process's event loop ran since the previous stats() call: when every target shares
  // one process on a busy machine, a late loop is queueing that no cache can remove.
  // The histogram records each interval of a 10 ms timer: what exceeds 10 ms is the lag.
  const LOOP_RESOLUTION_MS = 10;
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  loop.enable();
  const lag = (ns: number) => Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS);
  const stats = () => {
    const figures: Record<string, number> = {
      ...counters,
      'loop.p99Ms': lag(loop.percentile(99)),
      'loop.maxMs': lag(loop.max),
    };
    for (const [name, h] of XH) {
      figures[`x.${name}.n`] = h.count;
      figures[`x.${name}.p50`] = h.percentile(50) / 1000;
      figures[`x.${name}.p99`] = h.percentile(99) / 1000;
      h.reset();
    }
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
