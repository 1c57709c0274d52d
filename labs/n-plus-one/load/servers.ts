/**
 * The servers the load script measures, started in their own process by forkServers(): the starter,
 * the DataLoader solution and the single-query alternative, each with its own pg pool, so each pool's
 * query counter (the test kit's, as in the spec) counts one target only.
 */
import { openLab } from '@labs/lab-kit';
import { stopServices } from '@labs/services';
import { countQueries, type QueryCounter } from '@labs/test-kit';
import type { FeedLoader } from '../server/app.ts';
import { DEFAULT_SEED, seed } from '../server/database.ts';
import nPlusOneLab from '../server/lab.ts';
import { loadAuthorFeed as starterFeed } from '../src/author-feed.ts';
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
  // One context for every target: the run's own database (so a `lab serve` running at the same time is
  // left alone), dropped with the pools and servers when the run ends.
  const lab = await openLab(nPlusOneLab, { purpose: 'bench' });
  const urls: Record<string, string> = {};
  const counters: Record<string, { queries: QueryCounter; requests: number }> = {};
  for (const [name, loadFeed] of Object.entries(TARGETS)) {
    const db = await lab.context.database({ max: options.poolSize });
    if (Object.keys(urls).length === 0) await seed(db, DEFAULT_SEED); // one database, seeded once for all
    const counter = { queries: countQueries(db), requests: 0 };
    counters[name] = counter;
    const { app } = await nPlusOneLab.build(lab.context, { db, loadFeed });
    const server = await lab.context.listen((req, res) => {
      // Counted on arrival: every request that arrives runs all its queries, even if autocannon hangs up.
      counter.requests += 1;
      app(req, res);
    });
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
    close: () => lab.close().then(stopServices),
  };
}
