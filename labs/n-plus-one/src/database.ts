/**
 * The lab's schema and its deterministic dataset: thousands of authors, tens of posts each (some with
 * none, some with fewer than a page shows), generated inside PostgreSQL by generate_series in two
 * INSERT ... SELECT statements, so 100,000 posts load in seconds instead of 100,000 round trips.
 */
import pg from 'pg';
import { createPgPool } from '@labs/services';

/** How big the dataset is. The same numbers always give the same rows. */
export interface SeedOptions {
  /** Number of authors (ids 1..authors). */
  authors: number;
  /** Most posts any author has; each author has (id × 7) mod (maxPostsPerAuthor + 1), so 0 for some. */
  maxPostsPerAuthor: number;
}

/** What `pnpm lab serve` and the load script use: 5,000 authors, about 100,000 posts. */
export const DEFAULT_SEED: SeedOptions = { authors: 5000, maxPostsPerAuthor: 40 };

const SCHEMA = `
DROP TABLE IF EXISTS posts;
DROP TABLE IF EXISTS authors;
CREATE TABLE authors (
  id   integer PRIMARY KEY,
  name text NOT NULL
);
CREATE TABLE posts (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  author_id    integer NOT NULL REFERENCES authors (id),
  title        text NOT NULL,
  published_at timestamptz NOT NULL
);
`;

/**
 * PostgreSQL indexes the primary key, never the referencing side of a foreign key. Without this index
 * "the latest posts of author 42" scans all 100,000 posts, and the N+1 version does that N times.
 * It also matches the page's order, so the newest posts are read straight off the index.
 */
const POSTS_INDEX = 'CREATE INDEX posts_author_latest ON posts (author_id, published_at DESC, id DESC)';

/**
 * Drops and recreates the two tables and fills them. Publication times repeat (a few hundred distinct
 * hours), so ordering by time alone would be ambiguous: every query orders by (published_at, id).
 */
export async function seed(db: pg.Pool | pg.Client, options: SeedOptions = DEFAULT_SEED): Promise<void> {
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
  await db.query(POSTS_INDEX);
  await db.query('ANALYZE authors; ANALYZE posts');
}

/**
 * A pool on a database of the lab's own, named `database`, created if absent, so reseeding (which drops
 * and recreates two tables) never touches anyone else's tables. (Embedded PGlite accepts the CREATE and
 * serves its one database, private to its process, whatever name a connection asks for.) If the database
 * cannot be created (a role without CREATEDB), this fails with a message: falling back to the database in
 * `url` could drop a real `authors` or `posts` table.
 */
export async function openLabDatabase(
  url: string,
  database = 'labs_n_plus_one',
  options: pg.PoolConfig = {},
): Promise<pg.Pool> {
  const admin = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${database}`);
  } catch (error) {
    // 42P04: another process created it between our check and our CREATE; that is fine.
    if ((error as { code?: string }).code !== '42P04') {
      throw new Error(
        `Cannot create the lab's own database "${database}": ${(error as Error).message}. ` +
          'Grant this role CREATEDB, create the database yourself, or use the embedded engine (LABS_PROVIDER=postgres:embedded).',
      );
    }
  } finally {
    await admin.end();
  }
  const own = new URL(url);
  own.pathname = `/${database}`;
  return createPgPool(own.toString(), options);
}
