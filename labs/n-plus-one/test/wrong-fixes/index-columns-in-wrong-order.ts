/**
 * WRONG FIX: the batch is right, and ensureIndexes indexes every column the query touches, in the order
 * of its ORDER BY: (published_at DESC, id DESC, author_id).
 *
 * Same columns, wrong order. A B-tree is sorted by its first column; one author's posts are scattered
 * across the whole index, so "the newest 3 of author X" means walking it from the newest entry until 3
 * of X's turn up, or reading all of it. Columns compared with = come first (author_id), then the ones
 * the rows are ordered by: (author_id, published_at DESC, id DESC).
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

export async function ensureIndexes(db: pg.Pool): Promise<void> {
  await db.query('CREATE INDEX IF NOT EXISTS posts_newest ON posts (published_at DESC, id DESC, author_id)');
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
