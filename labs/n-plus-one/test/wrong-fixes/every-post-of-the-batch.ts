/**
 * WRONG FIX: the textbook batch, `WHERE author_id = ANY($1)`, then the newest 3 of each author cut in
 * JavaScript.
 *
 * Two queries, the index is used, the pages are right. But the page shows 3 posts per author and the
 * query returns all of them: 40 per author at most in this dataset, and as many as an author ever wrote
 * in a real one (an author with 20,000 posts costs 20,000 rows on every page they appear on). For "the
 * newest N per parent", rank in SQL: LATERAL with LIMIT, or row_number() over the batch.
 *
 * @catches PostgreSQL returns only the rows a page shows, its authors and their latest posts (N = 10, 100)
 */
import DataLoader from 'dataloader';
import type pg from 'pg';
import {
  findAuthors,
  LATEST_POSTS,
  toPost,
  type AuthorWithPosts,
  type PageRequest,
  type Post,
  type PostRow,
} from '../../server/author-repository.ts';

export async function ensureIndexes(db: pg.Pool): Promise<void> {
  await db.query('CREATE INDEX IF NOT EXISTS posts_author_latest ON posts (author_id, published_at DESC, id DESC)');
}

async function postsOfMany(db: pg.Pool, authorIds: readonly number[]): Promise<Post[][]> {
  const { rows } = await db.query<PostRow & { author_id: number }>(
    `SELECT author_id, id, title, published_at FROM posts
     WHERE author_id = ANY($1::int[])
     ORDER BY author_id, published_at DESC, id DESC`,
    [authorIds],
  );
  const byAuthor = new Map<number, Post[]>(authorIds.map((id) => [id, []]));
  for (const row of rows) byAuthor.get(row.author_id)?.push(toPost(row));
  return authorIds.map((id) => (byAuthor.get(id) ?? []).slice(0, LATEST_POSTS));
}

export async function loadAuthorFeed(db: pg.Pool, page: PageRequest): Promise<AuthorWithPosts[]> {
  const postsByAuthor = new DataLoader((ids: readonly number[]) => postsOfMany(db, ids));
  const authors = await findAuthors(db, page);
  return Promise.all(authors.map(async (author) => ({ ...author, latestPosts: await postsByAuthor.load(author.id) })));
}
