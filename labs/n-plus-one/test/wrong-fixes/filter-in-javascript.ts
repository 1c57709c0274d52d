/**
 * WRONG FIX: two queries whatever the page size: the page of authors, then every post there is, kept
 * or dropped in JavaScript (no WHERE: "the database is fast, the filter is one line of JS").
 *
 * The count is right and so is every page, and it costs the whole posts table per request: with the
 * lab's 100,000 posts, a page of 10 authors reads, sends and decodes 100,000 rows to show 30. It also
 * grows with the table, not with the page. Filter and rank in SQL, where the index can skip what the
 * page never shows.
 *
 * @catches PostgreSQL returns only the rows a page shows, its authors and their latest posts (N = 10, 100)
 */
import type pg from 'pg';
import {
  findAuthors,
  LATEST_POSTS,
  toPost,
  type AuthorWithPosts,
  type PageRequest,
  type PostRow,
} from '../../server/author-repository.ts';

export async function ensureIndexes(db: pg.Pool): Promise<void> {
  await db.query('CREATE INDEX IF NOT EXISTS posts_author_latest ON posts (author_id, published_at DESC, id DESC)');
}

export async function loadAuthorFeed(db: pg.Pool, page: PageRequest): Promise<AuthorWithPosts[]> {
  const authors = await findAuthors(db, page);
  if (authors.length === 0) return [];
  const { rows } = await db.query<PostRow & { author_id: number }>(
    'SELECT author_id, id, title, published_at FROM posts ORDER BY published_at DESC, id DESC',
  );
  return authors.map((author) => ({
    ...author,
    latestPosts: rows
      .filter((row) => row.author_id === author.id)
      .slice(0, LATEST_POSTS)
      .map(toPost),
  }));
}
