/**
 * The lab's schema and its deterministic dataset: thousands of authors, tens of posts each (some with
 * none, some with fewer than a page shows), generated inside PostgreSQL by generate_series in two
 * INSERT ... SELECT statements, so 100,000 posts load in seconds instead of 100,000 round trips. And
 * the API's pool settings: how long it may wait on PostgreSQL.
 */
import type pg from 'pg';
import { boundedPool, setupTransaction } from '@labs/lab-kit';

/** How big the dataset is. The same numbers always give the same rows. */
export interface SeedOptions {
  /** Number of authors (ids 1..authors). */
  authors: number;
  /** Most posts any author has; each author has (id × 7) mod (maxPostsPerAuthor + 1), so 0 for some. */
  maxPostsPerAuthor: number;
}

/** What `lab serve` and the load script use: 5,000 authors, about 100,000 posts. */
export const DEFAULT_SEED: SeedOptions = { authors: 5000, maxPostsPerAuthor: 40 };

/**
 * The API's pool (the kit's boundedPool): 2 s to open or wait for a connection, 2 s for a statement
 * (the server cancels it, 57014, the connection stays usable), 3 s for an answer from a frozen server.
 * Seeding and index builds run longer than any request should, on a pool of their own without these.
 */
export const APP_POOL_OPTIONS = boundedPool({ statementMs: 2000, answerMs: 3000, connectMs: 2000 });

const SCHEMA = `
DROP TABLE IF EXISTS posts;
DROP TABLE IF EXISTS authors;
CREATE TABLE authors (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE posts (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, author_id integer NOT NULL REFERENCES authors (id),
  title text NOT NULL, published_at timestamptz NOT NULL
);`;

/**
 * Drops and recreates the two tables and fills them. Publication times repeat across authors, so every
 * query orders by (published_at, id). The tables get only the indexes PostgreSQL makes by itself, one
 * per primary key: the rest is the exercise's `ensureIndexes(db)`, called after seeding.
 */
export async function seed(db: pg.Pool | pg.ClientBase, options: SeedOptions = DEFAULT_SEED): Promise<void> {
  await db.query(SCHEMA);
  await db.query(
    `INSERT INTO authors (id, name)
     SELECT i, (ARRAY['Ada','Grace','Edsger','Barbara','Donald','Margaret','Alan','Frances','Ken','Radia'])[1 + i % 10]
               || ' ' || (ARRAY['Lovelace','Hopper','Dijkstra','Liskov','Knuth','Hamilton','Turing','Allen','Thompson','Perlman'])[1 + (i / 10) % 10]
               || ' #' || i
     FROM generate_series(1, $1::int) AS i`,
    [options.authors],
  );
  await db.query(
    `INSERT INTO posts (author_id, title, published_at)
     SELECT a, format('Notes on topic %s, part %s', (a * 13 + n * 7) % 97, n),
            timestamptz '2025-01-01 00:00:00+00' + ((a * 31 + n * 17) % 500) * interval '1 hour'
     FROM generate_series(1, $1::int) AS a
     CROSS JOIN LATERAL generate_series(1, (a * 7) % ($2::int + 1)) AS n`,
    [options.authors, options.maxPostsPerAuthor],
  );
  await db.query('ANALYZE authors; ANALYZE posts');
}

/**
 * Which dataset the tables hold, written on `posts` by {@link seedOnce} in the seed's own transaction.
 * Change the version when SCHEMA or seed() change, so kept databases are seeded again. (v2: the seed
 * no longer indexes posts.author_id; that is the learner's `ensureIndexes`.)
 */
const datasetMark = (options: SeedOptions) =>
  `n-plus-one dataset v2: ${options.authors} authors, at most ${options.maxPostsPerAuthor} posts each`;

/**
 * Seeds `db` unless it already holds this dataset; true if it seeded. For `lab serve`, whose database
 * is kept: a restart reuses the data, and two `serve`s started together take turns (the kit's
 * setupTransaction: one transaction under an advisory lock), so the second finds the data in place
 * instead of dropping the tables the first is serving from, and a seed stopped halfway leaves nothing.
 */
export function seedOnce(db: pg.Pool, options: SeedOptions = DEFAULT_SEED): Promise<boolean> {
  const mark = datasetMark(options);
  return setupTransaction(db, 'labs:n-plus-one:seed', async (sql, client) => {
    const { rows } = await sql("SELECT obj_description(to_regclass('posts'), 'pg_class') AS mark");
    if (rows[0]?.mark === mark) return false;
    await seed(client, options);
    await sql(`COMMENT ON TABLE posts IS ${client.escapeLiteral(mark)}`);
    return true;
  });
}
