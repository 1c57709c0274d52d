/**
 * The API: GET /api/authors?limit=N&after=ID, a page of authors with their latest posts. createApp
 * never listens; tests and the load script start it on port 0, src/main.ts on a real port.
 */
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import type pg from 'pg';
import { loadAuthorFeed } from '#author-feed';
import type { AuthorWithPosts, PageRequest } from './author-repository.ts';

/** Authors per page when `limit` is absent. */
export const DEFAULT_LIMIT = 20;
/** The largest page: enough to show the problem, small enough that one request cannot ask for everything. */
export const MAX_LIMIT = 100;

/** How a page is loaded; the default is the lab's exercise (`#author-feed`). */
export type FeedLoader = (db: pg.Pool, page: PageRequest) => Promise<AuthorWithPosts[]>;

export interface AppDeps {
  db: pg.Pool;
  loadFeed?: FeedLoader;
}

/** The body of GET /api/authors. */
export interface AuthorsPage {
  authors: AuthorWithPosts[];
  /** Pass as `after` for the next page; null when this page is the last (it came back short). */
  nextAfter: number | null;
}

/**
 * Reads `limit` (0..MAX_LIMIT, default DEFAULT_LIMIT; 0 is an empty page) and `after` (an author id,
 * default 0) from the query string, or says what is wrong with them.
 */
export function parsePage(query: Request['query']): { page: PageRequest } | { error: string } {
  const limit = wholeNumber(query.limit, DEFAULT_LIMIT);
  if (limit === undefined || limit > MAX_LIMIT) {
    return { error: `limit must be a whole number from 0 to ${MAX_LIMIT}, got ${JSON.stringify(query.limit)}` };
  }
  const after = wholeNumber(query.after, 0);
  if (after === undefined || after > 2_147_483_647) {
    return { error: `after must be an author id (a whole number, 0 or more), got ${JSON.stringify(query.after)}` };
  }
  return { page: { limit, after } };
}

/** A query parameter as a non-negative safe integer; `fallback` when absent, undefined when malformed. */
function wholeNumber(raw: unknown, fallback: number): number | undefined {
  if (raw === undefined) return fallback;
  if (typeof raw !== 'string' || !/^\d{1,15}$/.test(raw)) return undefined; // also rejects ?limit=1&limit=2
  return Number(raw);
}

export function createApp(deps: AppDeps): Express {
  const { db, loadFeed = loadAuthorFeed } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.get('/health', (_req, res) => {
    res.json({ ok: true });
  });
  app.get('/api/authors', async (req, res) => {
    const parsed = parsePage(req.query);
    if ('error' in parsed) {
      res.status(400).json({ error: parsed.error });
      return;
    }
    const authors = await loadFeed(db, parsed.page);
    const last = authors.at(-1);
    const body: AuthorsPage = { authors, nextAfter: last && authors.length === parsed.page.limit ? last.id : null };
    res.json(body);
  });
  // Express 5 passes a rejected handler here: the client gets a short message, the log the details.
  app.use((error: Error, _req: Request, res: Response, _next: NextFunction) => {
    console.error(`[n-plus-one] ${error.message}`);
    res.status(500).json({ error: 'Internal error' });
  });
  return app;
}
