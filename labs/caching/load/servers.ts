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
import { starterEdited, starterVersions } from '@labs/bench';
import { stopServices } from '@labs/services';
import { meterSql, type OpenLab, openLab, type SqlMeter } from '@labs/lab-kit';
import type { UserCache, UserCacheOptions } from '../server/cache.ts';
import cachingLab, { type CachingConfig, DATABASE_POOL_OPTIONS } from '../server/lab.ts';
import { prepareDatabase } from '../server/user-repository.ts';
import { createUserCache as solutionCache } from '../solution/user-cache.ts';

export interface BenchServerOptions {
  users: number;
  instances: number;
  ttlMs: number;
}

/** The learner's file: when they have edited it, it runs as "your code" beside the committed starter. */
const STARTER = new URL('../src/user-cache.ts', import.meta.url);

/** The targets in the order the table shows them. */
export const TARGETS: readonly string[] = [
  'no-cache',
  'starter',
  ...(starterEdited(STARTER) ? ['your code'] : []),
  'solution',
];

/** No cache at all: what the API costs when every read is a query. */
function noCache({ repository }: UserCacheOptions): UserCache {
  return {
    async get(id) {
      return { user: await repository.find(id), source: 'database' };
    },
    put: (id, input) => repository.save(id, input),
  };
}

/** Each target's cache: no cache, the committed starter (and the learner's edited one), the solution. */
async function builders(): Promise<Record<string, (options: UserCacheOptions) => UserCache>> {
  const starters = await starterVersions(
    STARTER,
    (url) => import(url.href) as Promise<typeof import('../src/user-cache.ts')>,
  );
  return {
    'no-cache': noCache,
    ...Object.fromEntries(starters.map(({ name, module }) => [name, module.createUserCache])),
    solution: solutionCache,
  };
}

/**
 * SELECTs sent through `meter`'s pool since the last call, counted as the spec counts them (the lab
 * kit's SQL meter), then forgotten: a long run keeps only the totals.
 */
function selectsSince(meter: SqlMeter): number {
  const selects = meter.sent.filter((sql) => /^\s*select\b/i.test(sql.text)).length;
  meter.reset();
  return selects;
}

/** Reads every user once through `cache`, a few at a time: a cache that has been up for a while. */
async function warm(cache: UserCache, users: number): Promise<void> {
  let next = 1;
  let failed = 0;
  const worker = async () => {
    while (next <= users) {
      const id = next++;
      // On a busy machine a Redis call may outrun the cache's 250 ms timeout, and a starter need not
      // survive that: a user left cold is a miss in the run, not a reason to measure nothing.
      await cache.get(id).catch(() => {
        failed += 1;
      });
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  if (failed > 0) console.log(`  ${failed} of ${users} users were left cold (Redis timed out while warming)`);
}

export async function start(options: BenchServerOptions) {
  const { users, instances, ttlMs } = options;
  const counters: Record<string, number> = {};
  const meters = new Map<string, SqlMeter>();
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
    const BUILDERS = await builders();
    for (const target of TARGETS) {
      const lab = await openLab(cachingLab, { purpose: 'bench' });
      labs.push(lab);
      // The pool `lab serve` gives the API (its timeouts are part of what is measured), with the spec's
      // SQL meter on it: the database reads of this target alone.
      const pool = await lab.context.database({ ...DATABASE_POOL_OPTIONS, max: 10 });
      await prepareDatabase(pool, users);
      const meter = meterSql(pool, { keepSent: true });
      meters.set(target, meter);
      for (let i = 0; i < instances; i++) {
        let cache: UserCache | undefined;
        const built = await cachingLab.build(lab.context, {
          pool,
          ttlMs,
          instance: `${target}-${i + 1}`,
          createCache: (cacheOptions) => {
            cache = BUILDERS[target]!(cacheOptions);
            return cache;
          },
          onLookup: ({ source }) => {
            counters[`${target}.lookups`] = (counters[`${target}.lookups`] ?? 0) + 1;
            if (source === 'cache') counters[`${target}.hits`] = (counters[`${target}.hits`] ?? 0) + 1;
          },
        });
        if (i === 0 && cache && target !== 'no-cache') await warm(cache, users);
        urls[`${target}#${i}`] = (await lab.context.listen(built)).url;
      }
      selectsSince(meter); // the warm-up's reads are not the run's
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
    for (const [target, meter] of meters)
      counters[`${target}.dbReads`] = (counters[`${target}.dbReads`] ?? 0) + selectsSince(meter);
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
