/**
 * The n-plus-one lab, described once: `lab serve`, the spec and the load script all start it from
 * here. Serving also seeds the dataset (once per database) and logs the SQL statements per request.
 */
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { defineLab } from '@labs/lab-kit';
import { createApp, type FeedLoader } from './app.ts';
import { DEFAULT_SEED, seedOnce } from './database.ts';
import { logQueriesPerRequest } from './query-log.ts';

/** What a spec or load script may set instead of the defaults. */
export interface NPlusOneLabOptions {
  /** The pool the app queries (one the caller seeded, and counts); default: a new one on this start's database. */
  db: pg.Pool;
  /** How a page is loaded (the load script compares several); default: the exercise, `#author-feed`. */
  loadFeed: FeedLoader;
}

export default defineLab<Record<string, never>, NPlusOneLabOptions>({
  slug: 'n-plus-one',
  title: 'N+1 query problem',
  services: ['postgres'],
  async build(context, options) {
    const db = options.db ?? (await context.database());
    const app = createApp({ db, loadFeed: options.loadFeed });
    const usage = (url: string) => [
      `Try:   curl -s '${url}/api/authors?limit=3'`,
      `Next:  curl -s '${url}/api/authors?limit=3&after=3'`,
    ];
    // A spec or load script seeds its own (fresh, dropped afterwards) database and counts for itself.
    if (context.purpose !== 'serve') return { app, usage };

    const started = performance.now();
    const seeded = await seedOnce(db, DEFAULT_SEED);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(
      seeded
        ? `Seeded ${DEFAULT_SEED.authors} authors and their posts in ${seconds} s`
        : `Reusing the ${DEFAULT_SEED.authors} authors and their posts already in the lab's database`,
    );
    return { app: logQueriesPerRequest(db, app), usage };
  },
});
