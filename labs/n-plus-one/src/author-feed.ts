/**
 * STARTER: a page of authors, each with their latest posts, loaded the way an ORM's lazy relation
 * loads them (`author.posts` in Sequelize, Hibernate, ActiveRecord, Prisma's nested reads in a loop).
 *
 * It reads naturally and it is correct: one query for the page of authors, then each author fetches
 * its own posts. That is 1 + N queries for N authors, every one a network round trip and a trip
 * through the planner. At N = 10 nobody notices; at N = 100 the request spends its life waiting on
 * the database and holding pool connections other requests need.
 *
 * And each of those queries asks for "the posts of author X", on a table indexed only by its primary
 * key.
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
} from '../server/author-repository.ts';

/**
 * The indexes the feed's queries need, created once at start-up: `lab serve`, the spec and the load
 * script call it after the tables exist and before the first request. It must be safe to run again on
 * a database that already has them.
 */
export async function ensureIndexes(_db: pg.Pool): Promise<void> {
  // Nothing to create: posts.id is the primary key, and posts.author_id is declared REFERENCES
  // authors (id), so PostgreSQL has what it needs to find an author's posts.
  // TODO(lab): has it? Ask it how it finds them: EXPLAIN the query that reads an author's posts.
}

/** The newest posts of one author. */
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

/**
 * The page of authors after `page.after`, each with their newest posts. Called once per HTTP request.
 */
export async function loadAuthorFeed(db: pg.Pool, page: PageRequest): Promise<AuthorWithPosts[]> {
  const authors = await findAuthors(db, page);
  // TODO(lab): this sends one query per author: 1 + N in all. Collect the authors' ids and fetch all of
  // their posts in one query, then hand each author its own. (A DataLoader made here, once per call,
  // lets this line keep its shape: `await postsByAuthor.load(author.id)`.)
  return Promise.all(
    authors.map(async (author) => ({
      ...author,
      latestPosts: await latestPostsOf(db, author.id),
    })),
  );
}
