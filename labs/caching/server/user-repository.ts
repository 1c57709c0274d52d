/**
 * The users table and the only two queries the API needs. The cache sits in front of this; the learner
 * does not edit it. Every query goes through `db.query`, so a test or the load script can count them.
 */
import type pg from 'pg';
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
      const { rows } = await db.query<UserRow>('SELECT id, name, email, version, updated_at FROM users WHERE id = $1', [
        id,
      ]);
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
 * How long one statement of the preparation may take. Preparing is no request: seeding a million users,
 * or waiting for another process to finish preparing, takes longer than the API's pool allows a query
 * (server/lab.ts), so the preparation lifts those bounds for its own statements.
 */
const PREPARE_TIMEOUT_MS = 300_000;

/**
 * Creates the table and users 1..seedCount (those that do not exist yet) in one transaction, under an
 * advisory lock: two processes preparing one database at once (two `lab serve`s) take turns instead
 * of racing, because two concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog. Safe
 * to run again.
 */
export async function prepareDatabase(pool: pg.Pool, seedCount: number): Promise<void> {
  const client = await pool.connect();
  // pg reads a per-query `query_timeout` (the client-side bound) though its types do not declare it.
  const run = (text: string, values?: unknown[]) =>
    client.query({ text, values, query_timeout: PREPARE_TIMEOUT_MS } as pg.QueryConfig);
  try {
    await run('BEGIN');
    await run(`SET LOCAL statement_timeout = ${PREPARE_TIMEOUT_MS}`);
    // Released by COMMIT or ROLLBACK: a crashed process never leaves it held.
    await run(`SELECT pg_advisory_xact_lock(hashtext('labs:caching:prepare'))`);
    await run(`CREATE TABLE IF NOT EXISTS users (
      id integer PRIMARY KEY,
      name text NOT NULL,
      email text NOT NULL,
      version integer NOT NULL DEFAULT 1,
      updated_at timestamptz NOT NULL DEFAULT now()
    )`);
    await run(
      `INSERT INTO users (id, name, email)
       SELECT n, 'User ' || n, 'user' || n || '@example.com' FROM generate_series(1, $1::integer) AS n
       ON CONFLICT (id) DO NOTHING`,
      [seedCount],
    );
    await run('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
