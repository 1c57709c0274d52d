/**
 * The shapes the API returns and the one query every version shares: a page of authors. How their
 * posts are loaded is the lesson, in author-feed.ts.
 */
import type pg from 'pg';

/** How many of an author's newest posts the feed shows. */
export const LATEST_POSTS = 3;

export interface Post {
  id: number;
  title: string;
  /** ISO 8601, UTC. */
  publishedAt: string;
}

export type Author = { id: number; name: string };

export interface AuthorWithPosts extends Author {
  /** The author's newest posts, newest first, at most LATEST_POSTS; [] for an author with none. */
  latestPosts: Post[];
}

/** Keyset pagination: the authors with an id above `after`, in id order, at most `limit` of them. */
export type PageRequest = { limit: number; after: number };

/** One page of authors, without their posts: one query, whatever the page size. */
export async function findAuthors(db: pg.Pool, page: PageRequest): Promise<Author[]> {
  const sql = 'SELECT id, name FROM authors WHERE id > $1 ORDER BY id LIMIT $2';
  return (await db.query<Author>(sql, [page.after, page.limit])).rows;
}

/** A posts row as the queries select it: bigint ids come back from pg as strings, timestamps as Dates. */
export type PostRow = { id: string; title: string; published_at: Date };

/** The API's shape of a posts row. */
export function toPost(row: PostRow): Post {
  return { id: Number(row.id), title: row.title, publishedAt: row.published_at.toISOString() };
}
