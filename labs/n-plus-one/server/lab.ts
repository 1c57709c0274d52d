/**
 * The n-plus-one lab, described once: `lab serve`, the spec and the load script all start it from
 * here. Serving also seeds the dataset (once per database), runs the exercise's `ensureIndexes`, and
 * logs the SQL statements and rows per request.
 */
import type pg from 'pg';
import { ensureIndexes } from '#author-feed';
import { defineLab } from '@labs/lab-kit';
import { createApp, type FeedLoader } from './app.ts';
import { APP_POOL_OPTIONS, DEFAULT_SEED, seedOnce } from './database.ts';
import { logQueriesPerRequest } from './query-log.ts';

/** What a spec or load script may set instead of the defaults. */
export interface NPlusOneLabOptions {
  /** The pool the app queries (one the caller seeded, indexed and meters); default: a new one, APP_POOL_OPTIONS. */
  db: pg.Pool;
  /** How a page is loaded (the load script compares several); default: the exercise, `#author-feed`. */
  loadFeed: FeedLoader;
}

/** The indexes on `posts`, as `name (columns)`: what `serve` prints, so the learner sees what exists. */
async function describeIndexes(db: pg.Pool): Promise<string> {
  const { rows } = await db.query<{ indexname: string; indexdef: string }>(
    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'posts' ORDER BY indexname",
  );
  return rows.map((r) => `${r.indexname} ${r.indexdef.match(/\(.*\)/)?.[0] ?? ''}`).join(', ');
}

export default defineLab<Record<string, never>, NPlusOneLabOptions>({
  async build(context, options) {
    const db = options.db ?? (await context.database(APP_POOL_OPTIONS));
    const app = createApp({ db, loadFeed: options.loadFeed });
    const usage = (url: string) => [
      `Try:   curl -s '${url}/api/authors?limit=3'`,
      `Next:  curl -s '${url}/api/authors?limit=3&after=3'`,
    ];
    // A spec or load script seeds and indexes its own (fresh, dropped afterwards) database and meters for itself.
    if (context.purpose !== 'serve') return { app, usage };
    // Seeding 100,000 rows and building an index take longer than the API's statement timeout allows,
    // so they get a connection of their own without it (closed by the pool once idle).
    const setup = await context.database({ max: 1 });
    const started = performance.now();
    const seeded = await seedOnce(setup, DEFAULT_SEED);
    await ensureIndexes(setup);
    const took = `in ${((performance.now() - started) / 1000).toFixed(1)} s`;
    console.log(
      `${seeded ? 'Seeded' : 'Reusing'} ${DEFAULT_SEED.authors} authors and their posts ${seeded ? took : "already in the lab's database"}`,
    );
    console.log(`Indexes on posts: ${await describeIndexes(setup)}`);
    return { app: logQueriesPerRequest(db, app), usage };
  },
});
