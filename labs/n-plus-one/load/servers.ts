/**
 * The servers the load script measures, started in their own process by forkServers(): the starter,
 * the DataLoader solution and the single-query alternative, each with its own pg pool, so each pool's
 * SQL meter (the spec's: statements run and rows returned) measures one target only.
 */
import { openLab } from '@labs/lab-kit';
import { stopServices } from '@labs/services';
import type { FeedLoader } from '../server/app.ts';
import { APP_POOL_OPTIONS, DEFAULT_SEED, seed } from '../server/database.ts';
import nPlusOneLab from '../server/lab.ts';
import { meterSql, type SqlMeter } from '@labs/lab-kit';
import { ensureIndexes as starterIndexes, loadAuthorFeed as starterFeed } from '../src/author-feed.ts';
import {
  ensureIndexes as solutionIndexes,
  loadAuthorFeedInOneQuery,
  loadAuthorFeed as solutionFeed,
} from '../solution/author-feed.ts';

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
  // Seeded once for all, on a connection without the API's statement timeout. The targets share one
  // database and so its indexes: the solution's index is there for the starter too, so the table
  // compares statement counts, not the index (the spec's EXPLAIN challenge is about that).
  const setup = await lab.context.database({ max: 1 });
  await seed(setup, DEFAULT_SEED);
  await starterIndexes(setup);
  await solutionIndexes(setup);

  const urls: Record<string, string> = {};
  const meters: Record<string, { sql: SqlMeter; requests: number }> = {};
  for (const [name, loadFeed] of Object.entries(TARGETS)) {
    const db = await lab.context.database({ ...APP_POOL_OPTIONS, max: options.poolSize });
    const meter = { sql: meterSql(db), requests: 0 };
    meters[name] = meter;
    const { app } = await nPlusOneLab.build(lab.context, { db, loadFeed });
    const server = await lab.context.listen((req, res) => {
      // Counted on arrival: every request that arrives runs all its queries, even if autocannon hangs up.
      meter.requests += 1;
      app(req, res);
    });
    urls[name] = server.url;
  }
  return {
    urls,
    /** `<target>.statements`, `.rows` and `.requests` (arrived) since start: the script divides their deltas. */
    stats() {
      const out: Record<string, number> = {};
      for (const [name, m] of Object.entries(meters)) {
        out[`${name}.statements`] = m.sql.statements;
        out[`${name}.rows`] = m.sql.rows;
        out[`${name}.requests`] = m.requests;
      }
      return out;
    },
    close: () => lab.close().then(stopServices),
  };
}
