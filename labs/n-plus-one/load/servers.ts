/**
 * The servers the load script measures, started in their own process by forkServers(): the starter,
 * the DataLoader solution and the single-query alternative, each with its own pg pool, so each pool's
 * query counter (the test kit's, as in the spec) counts one target only.
 */
import type pg from 'pg';
import { resolveService, stopServices } from '@labs/services';
import { countQueries, listen, type Listening, type QueryCounter } from '@labs/test-kit';
import { createApp, type FeedLoader } from '../src/app.ts';
import { loadAuthorFeed as starterFeed } from '../src/author-feed.ts';
import { DEFAULT_SEED, openLabDatabase, seed } from '../src/database.ts';
import { loadAuthorFeed as solutionFeed, loadAuthorFeedInOneQuery } from '../solution/author-feed.ts';

export interface BenchServerOptions {
  /** Connections per target's pool. Three pools must fit the embedded engine's 20 connections. */
  poolSize: number;
}

/** The targets, in the order the table shows them. */
export const TARGETS: Record<string, FeedLoader> = {
  starter: starterFeed,
  'solution (DataLoader)': solutionFeed,
  'one query (LATERAL)': loadAuthorFeedInOneQuery,
};

export async function start(options: BenchServerOptions) {
  const { url } = await resolveService('postgres');
  const pools: pg.Pool[] = [];
  const servers: Listening[] = [];
  const urls: Record<string, string> = {};
  const counters: Record<string, { queries: QueryCounter; requests: number }> = {};
  // The load script's own database, so a `pnpm lab serve` running at the same time is left alone.
  for (let i = 0; i < Object.keys(TARGETS).length; i++) {
    pools.push(await openLabDatabase(url, 'labs_n_plus_one_bench', { max: options.poolSize }));
  }
  await seed(pools[0]!, DEFAULT_SEED);
  for (const [i, [name, loadFeed]] of Object.entries(TARGETS).entries()) {
    const db = pools[i]!;
    const counter = { queries: countQueries(db), requests: 0 };
    counters[name] = counter;
    const app = createApp({ db, loadFeed });
    const server = await listen((req, res) => {
      // Counted on arrival: every request that arrives runs all its queries, even if autocannon hangs up.
      counter.requests += 1;
      app(req, res);
    });
    servers.push(server);
    urls[name] = server.url;
  }
  return {
    urls,
    /** `<target>.queries` and `<target>.requests` (arrived) since start: the script divides their deltas. */
    stats() {
      const out: Record<string, number> = {};
      for (const [name, c] of Object.entries(counters)) {
        out[`${name}.queries`] = c.queries.count;
        out[`${name}.requests`] = c.requests;
      }
      return out;
    },
    async close() {
      await Promise.all(servers.map((s) => s[Symbol.asyncDispose]()));
      await Promise.all(pools.map((p) => p.end()));
      await stopServices();
    },
  };
}
