/**
 * The servers the load script measures, started in their own process by forkServers(): the starter,
 * the DataLoader solution and the single-query alternative, each with its own pg pool, so each pool's
 * SQL meter (the spec's: statements run and rows returned) measures one target only. The load script
 * starts this module once per distance: `DATABASE_URL` then points at the bench kit's latency proxy.
 *
 * Each pool also counts how long queries waited for a free connection: when a target asks for more
 * connections at once than its pool holds, its latency is partly queueing, and the table says how much.
 */
import { performance } from 'node:perf_hooks';
import { starterVersions } from '@labs/bench';
import { meterSql, openLab, type SqlMeter } from '@labs/lab-kit';
import { stopServices } from '@labs/services';
import type pg from 'pg';
import type { FeedLoader } from '../server/app.ts';
import { APP_POOL_OPTIONS, DEFAULT_SEED, seed } from '../server/database.ts';
import nPlusOneLab from '../server/lab.ts';
import {
  ensureIndexes as solutionIndexes,
  loadAuthorFeedInOneQuery,
  loadAuthorFeed as solutionFeed,
} from '../solution/author-feed.ts';

export interface BenchServerOptions {
  /** Connections per target's pool. Three pools must fit the embedded engine's 20 connections. */
  poolSize: number;
}

/**
 * The targets, in the order the table shows them: the committed starter (and the learner's edited
 * src/ as "your code" beside it, when git sees a change), the DataLoader solution, the single query.
 */
async function targets() {
  const starters = await starterVersions(
    new URL('../src/author-feed.ts', import.meta.url),
    (url) => import(url.href) as Promise<typeof import('../src/author-feed.ts')>,
  );
  return {
    starterIndexes: starters.map(({ module }) => module.ensureIndexes),
    feeds: {
      ...Object.fromEntries(starters.map(({ name, module }) => [name, module.loadAuthorFeed as FeedLoader])),
      'solution (DataLoader)': solutionFeed,
      'one query (LATERAL)': loadAuthorFeedInOneQuery,
    } as Record<string, FeedLoader>,
  };
}

/** What a pool's connections were doing, summed since it was made. */
interface PoolMeter {
  /** Connections handed out (one per pool.query(), one per pool.connect()). */
  readonly checkouts: number;
  /** Milliseconds spent waiting for a connection, summed over every checkout. */
  readonly waitMs: number;
  /** Milliseconds during which every connection the pool may open was checked out. */
  readonly fullMs: number;
}

/**
 * Meters `pool`: how long each checkout waited for a connection, and how long the pool was full. Both
 * say whether a target's latency is queueing for the pool rather than work: the starter sends its N
 * queries at once (Promise.all), so one request alone can ask for more connections than the pool has.
 */
function meterPool(pool: pg.Pool, max: number): PoolMeter & { readonly fullMsNow: number } {
  let checkouts = 0;
  let waitMs = 0;
  let fullMs = 0;
  let out = 0;
  let fullSince: number | undefined;
  // pool.query() checks a connection out through this.connect(callback), so wrapping the instance's
  // connect sees every checkout, whether the app calls query() or connect().
  const connect = pool.connect.bind(pool) as (callback?: (...args: unknown[]) => void) => unknown;
  (pool as { connect: unknown }).connect = (callback?: (...args: unknown[]) => void) => {
    const asked = performance.now();
    const done = () => {
      checkouts += 1;
      waitMs += performance.now() - asked;
    };
    if (!callback) return (connect() as Promise<pg.PoolClient>).finally(done);
    return connect((...args: unknown[]) => {
      done();
      callback(...args);
    });
  };
  pool.on('acquire', () => {
    out += 1;
    if (out >= max && fullSince === undefined) fullSince = performance.now();
  });
  pool.on('release', () => {
    out -= 1;
    if (out < max && fullSince !== undefined) {
      fullMs += performance.now() - fullSince;
      fullSince = undefined;
    }
  });
  return {
    get checkouts() {
      return checkouts;
    },
    get waitMs() {
      return waitMs;
    },
    get fullMs() {
      return fullMs;
    },
    /** fullMs including the stretch the pool is full right now. */
    get fullMsNow() {
      return fullMs + (fullSince === undefined ? 0 : performance.now() - fullSince);
    },
  };
}

export async function start(options: BenchServerOptions) {
  // One context for every target: the run's own database (so a `lab serve` running at the same time is
  // left alone), dropped with the pools and servers when the run ends.
  const lab = await openLab(nPlusOneLab, { purpose: 'bench' });
  // Seeded once for all, on a connection without the API's statement timeout. The targets share one
  // database and so its indexes: the solution's index is there for the starter too, so the table
  // compares statement counts, not the index (the spec's EXPLAIN challenge is about that).
  const setup = await lab.context.database({ max: 1 });
  await seed(setup, DEFAULT_SEED);
  const { starterIndexes, feeds } = await targets();
  for (const ensureIndexes of starterIndexes) await ensureIndexes(setup);
  await solutionIndexes(setup);

  const urls: Record<string, string> = {};
  const meters: Record<string, { sql: SqlMeter; pool: ReturnType<typeof meterPool>; requests: number; busy: number }> =
    {};
  for (const [name, loadFeed] of Object.entries(feeds)) {
    const db = await lab.context.database({ ...APP_POOL_OPTIONS, max: options.poolSize });
    const meter = { sql: meterSql(db), pool: meterPool(db, options.poolSize), requests: 0, busy: 0 };
    meters[name] = meter;
    // Pages being loaded right now: when it is 0, every request that arrived has run all its queries
    // (autocannon hangs up at its deadline, but the server finishes what it started).
    const counted: FeedLoader = async (pool, page) => {
      meter.busy += 1;
      try {
        return await loadFeed(pool, page);
      } finally {
        meter.busy -= 1;
      }
    };
    const { app } = await nPlusOneLab.build(lab.context, { db, loadFeed: counted });
    const server = await lab.context.listen((req, res) => {
      // Counted on arrival: every request that arrives runs all its queries, even if autocannon hangs up.
      meter.requests += 1;
      app(req, res);
    });
    urls[name] = server.url;
  }
  return {
    urls,
    /**
     * Per target, since start: `.requests` (arrived), `.statements`, `.rows`, `.checkouts`,
     * `.poolWaitMs` and `.poolFullMs` (the script divides their deltas), and `.busy`: pages being loaded
     * now. `clockMs` is this process's clock, to divide `.poolFullMs` by.
     */
    stats() {
      const out: Record<string, number> = { clockMs: performance.now() };
      for (const [name, m] of Object.entries(meters)) {
        out[`${name}.requests`] = m.requests;
        out[`${name}.statements`] = m.sql.statements;
        out[`${name}.rows`] = m.sql.rows;
        out[`${name}.checkouts`] = m.pool.checkouts;
        out[`${name}.poolWaitMs`] = m.pool.waitMs;
        out[`${name}.poolFullMs`] = m.pool.fullMsNow;
        out[`${name}.busy`] = m.busy;
      }
      return out;
    },
    close: () => lab.close().then(stopServices),
  };
}
