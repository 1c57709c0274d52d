/**
 * SOLUTION: the same feed in two queries, whatever the page size: one for the authors, one for all of
 * their posts (every author id of the page in one array parameter, `$1::int[]`), batched by a
 * DataLoader made for this request.
 *
 * Why DataLoader rather than collecting ids by hand: the code that needs an author's posts keeps asking
 * for one author's posts (`postsByAuthor.load(id)`), and DataLoader gathers every load() made in the
 * same tick into one batch call. That matters when the callers are spread out (GraphQL resolvers, a
 * serializer per item, helpers called from several places): none of them has to know about the others.
 *
 * Why one loader per request: its cache is a per-request memo (the same author asked twice costs one
 * row), never a shared cache that could serve one user's data to another or go stale between requests.
 *
 * The other fix, one query with a LATERAL join and json_agg, is `loadAuthorFeedInOneQuery` below; the
 * README compares the two.
 *
 * Batching is half the fix. "The newest 3 posts of these authors" is cheap only if PostgreSQL can go
 * straight to an author's posts, and it indexes a primary key by itself, never the referencing side of
 * a foreign key: without `ensureIndexes` every batch reads the whole posts table.
 */
import DataLoader from 'dataloader';
import type pg from 'pg';
import { createQuietly } from '@labs/lab-kit';
import {
  findAuthors,
  LATEST_POSTS,
  toPost,
  type AuthorWithPosts,
  type PageRequest,
  type Post,
  type PostRow,
} from '../server/author-repository.ts';

/**
 * The index the feed needs: posts by author, newest first, in the order the queries read them. Its
 * columns matter as much as its existence. `author_id` comes first because the queries look it up by
 * equality; `published_at DESC, id DESC` follow, in the queries' ORDER BY, so "the newest 3 of author
 * X" is the first 3 entries under X, read in order with no sort. An index on (published_at, author_id)
 * holds the same columns and serves neither: the entries of one author are spread over the whole index.
 *
 * Run at start-up, before traffic, so a plain CREATE INDEX (which blocks writes to posts while it
 * builds) is fine. On a live table, a migration would use CREATE INDEX CONCURRENTLY (slower, outside a
 * transaction, and it must be checked for an INVALID index if it fails). IF NOT EXISTS makes it safe
 * to run on every start; it compares names only, so changing the columns means a new name.
 */
export async function ensureIndexes(db: pg.Pool): Promise<void> {
  // IF NOT EXISTS looks for the name before it builds, so two instances starting together can both
  // build, and the second to finish fails on PostgreSQL's catalog (a duplicate key in pg_class) with the
  // index there all the same. createQuietly runs the statement once more after that error: a no-op now.
  await createQuietly(
    db,
    'CREATE INDEX IF NOT EXISTS posts_author_latest ON posts (author_id, published_at DESC, id DESC)',
  );
}

/**
 * The newest posts of every author in `authorIds`, in one query, in the order of `authorIds` (what
 * DataLoader requires): an author with no posts gets [].
 *
 * Were the page to show every post, the batch would be the textbook one:
 *   SELECT author_id, id, title, published_at FROM posts WHERE author_id = ANY($1)
 * For the newest LATEST_POSTS per author ("top N per group"), `author_id = ANY($1)` plus
 * row_number() OVER (PARTITION BY author_id ...) also works, but reads and ranks every post of those
 * authors (about 2,000 rows for 100 authors) to keep 300. The LATERAL join below walks the
 * (author_id, published_at DESC, id DESC) index once per id in the batch and stops after LATEST_POSTS
 * entries: about 4x less work per batch here, and it does not grow with an author's post count.
 */
async function latestPostsOfMany(db: pg.Pool, authorIds: readonly number[]): Promise<Post[][]> {
  const { rows } = await db.query<PostRow & { author_id: number }>(
    `SELECT batch.author_id, p.id, p.title, p.published_at
     FROM unnest($1::int[]) AS batch (author_id)
     CROSS JOIN LATERAL (
       SELECT id, title, published_at FROM posts
       WHERE posts.author_id = batch.author_id
       ORDER BY published_at DESC, id DESC
       LIMIT $2
     ) p
     ORDER BY batch.author_id, p.published_at DESC, p.id DESC`,
    [authorIds, LATEST_POSTS],
  );
  const byAuthor = new Map<number, Post[]>(authorIds.map((id) => [id, []]));
  for (const row of rows) byAuthor.get(row.author_id)!.push(toPost(row)); // every row's id came from authorIds
  return authorIds.map((id) => byAuthor.get(id)!);
}

/**
 * A loader of "the newest posts of author X" for one request. No `maxBatchSize`: a batch holds the
 * authors of one page, and the API bounds a page (at most 100), so a cap here could never be reached.
 */
export function createPostsByAuthorLoader(db: pg.Pool): DataLoader<number, Post[]> {
  return new DataLoader((ids) => latestPostsOfMany(db, ids));
}

/**
 * The page of authors after `page.after`, each with their newest posts. Called once per HTTP request:
 * 2 queries for any page size (1 when the page is empty: DataLoader makes no call for no keys).
 */
export async function loadAuthorFeed(db: pg.Pool, page: PageRequest): Promise<AuthorWithPosts[]> {
  const postsByAuthor = createPostsByAuthorLoader(db);
  const authors = await findAuthors(db, page);
  return Promise.all(
    authors.map(async (author) => ({
      ...author,
      latestPosts: await postsByAuthor.load(author.id),
    })),
  );
}

/**
 * The alternative: the whole page in ONE query. For each author on the page a LATERAL subquery reads its
 * newest posts (an index range scan that stops after LATEST_POSTS rows), and json_agg folds them into
 * one JSON array per author, so the rows never multiply (a plain JOIN would repeat each author once per
 * post). One round trip, less data on the wire; the price is SQL that knows the whole response shape,
 * which composes badly when the shape is chosen by the client (GraphQL) or spread over many modules.
 */
export async function loadAuthorFeedInOneQuery(db: pg.Pool, page: PageRequest): Promise<AuthorWithPosts[]> {
  const { rows } = await db.query<{ id: number; name: string; latest_posts: Post[] }>(
    `SELECT a.id, a.name, latest.posts AS latest_posts
     FROM authors a
     CROSS JOIN LATERAL (
       SELECT coalesce(
                json_agg(json_build_object(
                  'id', p.id,
                  'title', p.title,
                  'publishedAt', to_char(p.published_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
                ) ORDER BY p.published_at DESC, p.id DESC),
                '[]'::json) AS posts
       FROM (
         SELECT id, title, published_at FROM posts
         WHERE author_id = a.id
         ORDER BY published_at DESC, id DESC
         LIMIT $3
       ) p
     ) latest
     WHERE a.id > $1
     ORDER BY a.id
     LIMIT $2`,
    [page.after, page.limit, LATEST_POSTS],
  );
  return rows.map((row) => ({ id: row.id, name: row.name, latestPosts: row.latest_posts }));
}
