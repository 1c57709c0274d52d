/**
 * POST /orders' Idempotency-Key (the IETF httpapi draft's header, as Stripe and others take it): the
 * client names its attempt, and a retry with the same name is the same order, never a second one.
 *
 * Why the API needs it: a publish the broker did not confirm in time may still have reached the queue
 * (the bytes were sent; the broker was slow to say so). The API cannot tell, so its 503 says "not
 * known", and a client that retries must not order twice. With a key, the first request stores the
 * job it made under that key; a retry finds it and publishes the same job again, with the same job id,
 * which the idempotent worker does at most once however many copies reach the queue.
 *
 * Kept for ever here (a lab's database is small and short-lived); a real API expires keys after a day
 * or so, and scopes them to the client that sent them.
 */
import { hash } from 'node:crypto';
import type pg from 'pg';
import { type ConfirmationJob, newJob, type Order } from './jobs.ts';

/** The header's value: 1-255 visible ASCII characters (a UUID, typically). */
export const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** The table of keys; created by migrate() in confirmations.ts. */
export const ORDER_REQUESTS_TABLE = `
    CREATE TABLE IF NOT EXISTS order_requests (
      idempotency_key text PRIMARY KEY,
      fingerprint     text NOT NULL,
      job             jsonb NOT NULL,
      created_at      timestamptz NOT NULL DEFAULT now()
    );`;

/**
 * The job of the order sent with `key`: a new one the first time, the stored one on every retry, or
 * 'another order' when the key came with a different order before (a client bug: a key names one
 * request). One statement, so two requests racing with one key get one job: the second waits on the
 * first's row and returns it.
 */
export async function jobForKey(db: pg.Pool, key: string, order: Order): Promise<ConfirmationJob | 'another order'> {
  const fingerprint = hash('sha256', JSON.stringify(order), 'hex');
  const { rows } = await db.query<{ job: ConfirmationJob; fingerprint: string }>(
    // DO UPDATE with no change, not DO NOTHING: it returns the row that is there, so the stored job
    // comes back in the same statement.
    `INSERT INTO order_requests (idempotency_key, fingerprint, job) VALUES ($1, $2, $3)
     ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
     RETURNING job, fingerprint`,
    [key, fingerprint, newJob(order)],
  );
  const row = rows[0]!; // DO UPDATE: there is always a row
  return row.fingerprint === fingerprint ? row.job : 'another order';
}
