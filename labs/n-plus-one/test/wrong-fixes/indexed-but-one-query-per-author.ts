/**
 * WRONG FIX: keep the loop, add the index. "Each query is now an index lookup of 3 entries, well under
 * a millisecond: where is the problem?"
 *
 * The index makes each statement cheap; it does not make there fewer of them. A page of 100 authors is
 * still 101 round trips, 101 plans and 101 turns of the pool, and the count is chosen by whoever sends
 * the request. Both halves are needed: one statement for all the page's posts, and the index under it.
 *
 * @catches a page costs the same number of queries, at most 2, whatever its size (N = 1, 10, 100)
 * @catches eight concurrent requests for 50 authors each cost eight times one request, each getting its own page
 */
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

async function latestPostsOf(db: pg.Pool, authorId: number): Promise<Post[]> {
  const { rows } = await db.query<PostRow>(
    `SELECT id, title, published_at FROM posts
     WHERE author_id = $1
     ORDER BY published_at DESC, id DESC
     LIMIT $2`,
    [authorId, LATEST_POSTS],
  );
  return rows.map(toPost);
}

export async function loadAuthorFeed(db: pg.Pool, page: PageRequest): Promise<AuthorWithPosts[]> {
  const authors = await findAuthors(db, page);
  return Promise.all(authors.map(async (author) => ({ ...author, latestPosts: await latestPostsOf(db, author.id) })));
}
