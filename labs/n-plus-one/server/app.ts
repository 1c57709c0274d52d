/**
 * The API: GET /api/authors?limit=N&after=ID, a page of authors with their latest posts, built by
 * `server/lab.ts`. Errors are RFC 9457 problems: PostgreSQL down or not answering in time (the pool's
 * bounds, APP_POOL_OPTIONS) is a 503 with Retry-After, which a client can act on; anything else a 500.
 */
import type { Express } from 'express';
import type pg from 'pg';
import { loadAuthorFeed } from '#author-feed';
import { labApp, parseInput, wholeNumber, z } from '@labs/lab-kit';
import { isPostgresOutage } from '@labs/services';
import type { AuthorWithPosts, PageRequest } from './author-repository.ts';

/** Authors per page when `limit` is absent. */
export const DEFAULT_LIMIT = 20;
/** The largest page: enough to show the problem, small enough that one request cannot ask for everything. */
export const MAX_LIMIT = 100;
/** Seconds a client is asked to wait after a 503: about what the pool's timeouts let an outage cost. */
export const RETRY_AFTER_SEC = 2;
/** The largest author id (`authors.id` is an integer): a bigger `after` is a mistake, not an empty page. */
export const MAX_AUTHOR_ID = 2_147_483_647;

/**
 * The query string of GET /api/authors: `limit` (0..MAX_LIMIT, default DEFAULT_LIMIT; 0 is an empty
 * page) and `after` (an author id, default 0). Other parameters are ignored.
 */
export const pageQuery = z.object({
  // In a URL, `?limit=` is a mistake worth a 400, not a request for the default.
  limit: wholeNumber({ fallback: DEFAULT_LIMIT, min: 0, max: MAX_LIMIT, emptyIsAbsent: false }),
  after: wholeNumber({ fallback: 0, min: 0, max: MAX_AUTHOR_ID, emptyIsAbsent: false }),
});

/** How a page is loaded; the default is the lab's exercise (`#author-feed`). */
export type FeedLoader = (db: pg.Pool, page: PageRequest) => Promise<AuthorWithPosts[]>;

/** The body of GET /api/authors. */
export interface AuthorsPage {
  authors: AuthorWithPosts[];
  /** Pass as `after` for the next page; null when this page is the last (it came back short). */
  nextAfter: number | null;
}

export function createApp({ db, loadFeed = loadAuthorFeed }: { db: pg.Pool; loadFeed?: FeedLoader }): Express {
  // An outage (refused, reset, timed out) is the database's state, not the request's fault.
  const outages = [{ test: isPostgresOutage, service: 'The database', retryAfterSec: RETRY_AFTER_SEC }];
  return labApp({ name: 'n-plus-one', outages }, (app) => {
    app.get('/api/authors', async (req, res) => {
      const page = parseInput(res, pageQuery, req.query);
      if (!page) return; // a 400 problem naming the parameter, sent before any SQL
      const authors = await loadFeed(db, page);
      const last = authors.at(-1);
      const body: AuthorsPage = { authors, nextAfter: last && authors.length === page.limit ? last.id : null };
      res.json(body);
    });
  });
}
