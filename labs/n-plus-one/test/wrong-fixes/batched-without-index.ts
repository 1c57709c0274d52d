/**
 * WRONG FIX: the batch is right (2 statements, 3 rows per author, a DataLoader per request), and the
 * starter's belief about indexes is kept: "author_id is a declared foreign key, so it is indexed".
 *
 * PostgreSQL indexes the primary key and unique constraints, never the referencing columns of a foreign
 * key. Each author in the batch then costs a scan of the whole posts table (the LATERAL subquery runs
 * once per author, so a page of 100 reads the table 100 times): the statement count is constant, the
 * work is not. Create the index in ensureIndexes, author_id first.
 *
 * @catches ensureIndexes gives posts an index that leads with its foreign key, author_id
 * @catches a page finds its posts through an index on author_id, never a Seq Scan on posts (EXPLAIN of its SQL)
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

export async function ensureIndexes(_db: pg.Pool): Promise<void> {
  // posts.author_id REFERENCES authors (id): nothing to add.
}

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
  for (const row of rows) byAuthor.get(row.author_id)?.push(toPost(row));
  return authorIds.map((id) => byAuthor.get(id) ?? []);
}

export async function loadAuthorFeed(db: pg.Pool, page: PageRequest): Promise<AuthorWithPosts[]> {
  const postsByAuthor = new DataLoader((ids: readonly number[]) => latestPostsOfMany(db, ids), { maxBatchSize: 500 });
  const authors = await findAuthors(db, page);
  return Promise.all(authors.map(async (author) => ({ ...author, latestPosts: await postsByAuthor.load(author.id) })));
}
