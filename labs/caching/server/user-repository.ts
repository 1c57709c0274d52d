/**
 * The users table and the only two queries the API needs. The cache sits in front of this; the learner
 * does not edit it. Every query goes through `db.query`, so a test or the load script can count them.
 */
import type pg from 'pg';
import { setupTransaction } from '@labs/lab-kit';
import { presentUser, type User, type UserInput, type UserRow } from './users.ts';

/** Reads and writes users in the shape of one schema version. */
export interface UserRepository {
  /** The user with this id, or null. One SELECT. */
  find(id: number): Promise<User | null>;
  /** Creates or replaces the user (PUT semantics) in one committed statement; the row version goes up by one. */
  save(id: number, input: UserInput): Promise<{ user: User; created: boolean }>;
}

export function createUserRepository(db: pg.Pool, schemaVersion: number): UserRepository {
  return {
    async find(id) {
      const sql = 'SELECT id, name, email, version, updated_at FROM users WHERE id = $1';
      const { rows } = await db.query<UserRow>(sql, [id]);
      return rows[0] ? presentUser(rows[0], schemaVersion) : null;
    },
    async save(id, { name, email }) {
      // One statement is one transaction: when query() resolves, the write is committed.
      // xmax = 0 only for a freshly inserted row: how PostgreSQL tells insert from update in an upsert.
      const { rows } = await db.query<UserRow & { created: boolean }>(
        `INSERT INTO users (id, name, email) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email,
           version = users.version + 1, updated_at = now()
         RETURNING id, name, email, version, updated_at, (xmax = 0) AS created`,
        [id, name, email],
      );
      const row = rows[0]!;
      return { user: presentUser(row, schemaVersion), created: row.created };
    },
  };
}

/**
 * Creates the table and users 1..seedCount (those that do not exist yet) in one transaction, under an
 * advisory lock (the kit's setupTransaction), so two processes preparing one database at once (two
 * `lab serve`s) take turns instead of racing; with bounds of its own, since seeding a million users
 * takes longer than the API's pool allows a query. Safe to run again.
 */
export function prepareDatabase(pool: pg.Pool, seedCount: number): Promise<void> {
  return setupTransaction(pool, 'labs:caching:prepare', async (sql) => {
    await sql(`CREATE TABLE IF NOT EXISTS users (
      id integer PRIMARY KEY,
      name text NOT NULL,
      email text NOT NULL,
      version integer NOT NULL DEFAULT 1,
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    await sql(
      `INSERT INTO users (id, name, email)
       SELECT n, 'User ' || n, 'user' || n || '@example.com' FROM generate_series(1, $1::integer) AS n
       ON CONFLICT (id) DO NOTHING`,
      [seedCount],
    );
  });
}
