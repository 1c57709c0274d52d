/**
 * Preparing a database (tables, seed rows) that several processes may prepare at once, as every
 * instance of a deployment does at start-up: they take turns or tolerate each other, never race.
 */
import type pg from 'pg';

/** Sends one statement of a {@link setupTransaction}, with its long bound. */
export type SetupSql = (text: string, values?: unknown[]) => Promise<pg.QueryResult>;

/**
 * Runs `work` on one connection of `pool` in one transaction that holds the advisory lock named `lock`
 * (released by COMMIT or ROLLBACK, so a crashed process never leaves it held). Two processes preparing
 * one database at once take turns instead of racing (two concurrent CREATE TABLE IF NOT EXISTS can still
 * collide in PostgreSQL's catalog), and one stopped halfway leaves nothing behind. Preparing is no
 * request: seeding, or waiting for another process to finish, takes longer than an API's pool allows
 * (`boundedPool`), so the lock and every statement sent through `sql` may take `timeoutMs` (default
 * 5 min) on both sides, whatever the pool says. `work` also gets the client itself.
 */
export async function setupTransaction<T>(
  pool: pg.Pool,
  lock: string,
  work: (sql: SetupSql, client: pg.PoolClient) => Promise<T>,
  timeoutMs = 300_000,
): Promise<T> {
  const client = await pool.connect();
  // pg reads a per-query `query_timeout` (the client-side bound) though its types do not declare it.
  const sql: SetupSql = (text, values) => client.query({ text, values, query_timeout: timeoutMs } as pg.QueryConfig);
  try {
    await sql('BEGIN');
    await sql(`SET LOCAL statement_timeout = ${Math.trunc(timeoutMs)}`);
    await sql('SELECT pg_advisory_xact_lock(hashtext($1))', [lock]);
    const result = await work(sql, client);
    await sql('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/** SQLSTATEs of an object someone else created at the same moment: unique violation, duplicate table, schema, object. */
const CREATED_MEANWHILE = ['23505', '42P07', '42P06', '42710'];

/**
 * Runs DDL written with IF NOT EXISTS, where another process may run the same at the same time without
 * a lock. Two creating one table at once can still collide in PostgreSQL's own catalog (a unique
 * violation on pg_type, "already exists"): the loser's table exists all the same, so the DDL runs once
 * more for whatever is left.
 */
export async function createQuietly(db: pg.Pool | pg.PoolClient, ddl: string): Promise<void> {
  try {
    await db.query(ddl);
  } catch (error) {
    if (!CREATED_MEANWHILE.includes((error as { code?: string }).code ?? '')) throw error;
    await db.query(ddl);
  }
}
