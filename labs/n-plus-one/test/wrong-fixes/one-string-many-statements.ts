/**
 * WRONG FIX: one round trip for the posts, by sending every author's query in one string:
 * `SELECT ... WHERE author_id = 1 ...; SELECT ... WHERE author_id = 2 ...; ...`.
 *
 * A counter of `query()` calls sees 2 per request. PostgreSQL still parses, plans and runs 1 + N
 * statements and sends N results: the N+1 is intact, only the network waits are gone. It also builds
 * SQL by pasting values into text (safe here only because the ids are integers from the database), so
 * it cannot use parameters or prepared statements. Send one statement for all the ids: `= ANY($1)` or
 * `unnest($1::int[])`, with the ids as one array parameter.
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
  type PostRow,
} from '../../server/author-repository.ts';

export async function ensureIndexes(db: pg.Pool): Promise<void> {
  await db.query('CREATE INDEX IF NOT EXISTS posts_author_latest ON posts (author_id, published_at DESC, id DESC)');
}

export async function loadAuthorFeed(db: pg.Pool, page: PageRequest): Promise<AuthorWithPosts[]> {
  const authors = await findAuthors(db, page);
  if (authors.length === 0) return [];
  const text = authors
    .map(
      (author) =>
        `SELECT id, title, published_at FROM posts WHERE author_id = ${Number(author.id)}
         ORDER BY published_at DESC, id DESC LIMIT ${LATEST_POSTS}`,
    )
    .join(';\n');
  // pg answers a string of several statements with an array of results, one per statement.
  const answer = (await db.query<PostRow>(text)) as pg.QueryResult<PostRow> | pg.QueryResult<PostRow>[];
  const results = Array.isArray(answer) ? answer : [answer];
  return authors.map((author, i) => ({ ...author, latestPosts: (results[i]?.rows ?? []).map(toPost) }));
}
