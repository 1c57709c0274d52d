/**
 * The note store: every statement the lab runs against one shard's `notes` table. A router decides
 * which shard (and in which transaction) each of these runs on; none of them knows about more than the
 * one shard it is given. Each call counts one statement on the shard (`shard.ops`), which the load
 * script reads as that shard's share of the traffic.
 *
 * Timestamps travel as fixed-width UTC text with microseconds (`2026-01-31T09:15:02.123456Z`): exact,
 * so a cursor built from one finds the same row again, and ordered the same way as text and as time.
 */
import type pg from 'pg';
import type { Note } from './router.ts';
import type { Shard } from './shards.ts';

/** A pool, or one client of it inside a transaction. */
export type Queryable = pg.Pool | pg.PoolClient;

/** A note to insert: the router chose its id and its bucket. */
export interface NewNote {
  id: string;
  tenant: string;
  bucket: number;
  body: string;
}

/** The greatest number of notes a tenant's list returns (newest first); a larger list pages instead. */
export const TENANT_LIST_LIMIT = 1000;

const ts = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
const COLUMNS = `id, tenant_id, bucket, body, ${ts('created_at')} AS created_at, ${ts('updated_at')} AS updated_at`;
/** Newest first; the id breaks ties between notes written in the same transaction (same created_at). */
const ORDER = 'ORDER BY created_at DESC, id DESC';

interface Row {
  id: string;
  tenant_id: string;
  bucket: number;
  body: string;
  created_at: string;
  updated_at: string;
}

async function run(db: Queryable, shard: Shard, sql: string, values: unknown[]): Promise<Note[]> {
  shard.ops++;
  const { rows } = await db.query<Row>(sql, values);
  return rows.map((r) => ({
    id: r.id,
    tenant: r.tenant_id,
    body: r.body,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    bucket: r.bucket,
    shard: shard.id,
  }));
}

/** Inserts `notes` in one statement (so they share one created_at) and returns them in the order given. */
export async function insert(db: Queryable, shard: Shard, notes: readonly NewNote[]): Promise<Note[]> {
  const created = await run(
    db,
    shard,
    `INSERT INTO ${shard.table('notes')} (id, tenant_id, bucket, body)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[])
     RETURNING ${COLUMNS}`,
    [notes.map((n) => n.id), notes.map((n) => n.tenant), notes.map((n) => n.bucket), notes.map((n) => n.body)],
  );
  const byId = new Map(created.map((n) => [n.id, n]));
  return notes.map((n) => byId.get(n.id)!);
}

/** Sets a note's body; undefined when the tenant has no such note here (in `buckets`, when given). */
export async function update(
  db: Queryable,
  shard: Shard,
  change: { tenant: string; id: string; body: string; buckets?: readonly number[] },
): Promise<Note | undefined> {
  const [note] = await run(
    db,
    shard,
    `UPDATE ${shard.table('notes')} SET body = $3, updated_at = now()
     WHERE tenant_id = $1 AND id = $2 AND ($4::int[] IS NULL OR bucket = ANY($4))
     RETURNING ${COLUMNS}`,
    [change.tenant, change.id, change.body, change.buckets ?? null],
  );
  return note;
}

/** A tenant's notes here, newest first (at most TENANT_LIST_LIMIT), only from `buckets` when given. */
export function list(
  db: Queryable,
  shard: Shard,
  query: { tenant: string; buckets?: readonly number[] },
): Promise<Note[]> {
  return run(
    db,
    shard,
    `SELECT ${COLUMNS} FROM ${shard.table('notes')}
     WHERE tenant_id = $1 AND ($2::int[] IS NULL OR bucket = ANY($2))
     ${ORDER} LIMIT ${TENANT_LIST_LIMIT}`,
    [query.tenant, query.buckets ?? null],
  );
}

/**
 * One keyset page of the notes of `tenants` on this shard, newest first: at most `limit` notes that
 * come strictly after `after` in that order (created_at DESC, id DESC). Only from `buckets` when given.
 */
export function page(
  db: Queryable,
  shard: Shard,
  query: {
    tenants: readonly string[];
    buckets?: readonly number[];
    after?: { createdAt: string; id: string };
    limit: number;
  },
): Promise<Note[]> {
  return run(
    db,
    shard,
    `SELECT ${COLUMNS} FROM ${shard.table('notes')}
     WHERE tenant_id = ANY($1) AND ($2::int[] IS NULL OR bucket = ANY($2))
       AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::uuid))
     ${ORDER} LIMIT $5`,
    [query.tenants, query.buckets ?? null, query.after?.createdAt ?? null, query.after?.id ?? null, query.limit],
  );
}

/** Every note here in id order, `limit` at a time after `afterId`: only `bucket`'s when given. */
export function scan(
  db: Queryable,
  shard: Shard,
  query: { bucket?: number; afterId?: string; limit: number },
): Promise<Note[]> {
  return run(
    db,
    shard,
    `SELECT ${COLUMNS} FROM ${shard.table('notes')}
     WHERE ($1::int IS NULL OR bucket = $1) AND ($2::uuid IS NULL OR id > $2)
     ORDER BY id LIMIT $3`,
    [query.bucket ?? null, query.afterId ?? null, query.limit],
  );
}

/** The notes here with these ids (those that exist). */
export function byIds(db: Queryable, shard: Shard, ids: readonly string[]): Promise<Note[]> {
  return run(db, shard, `SELECT ${COLUMNS} FROM ${shard.table('notes')} WHERE id = ANY($1::uuid[])`, [ids]);
}

/** Writes `notes` here exactly as given (all columns, timestamps included), replacing any with the same id. */
export async function upsert(db: Queryable, shard: Shard, notes: readonly Note[]): Promise<number> {
  if (notes.length === 0) return 0;
  await run(
    db,
    shard,
    `INSERT INTO ${shard.table('notes')} AS n (id, tenant_id, bucket, body, created_at, updated_at)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::timestamptz[])
     ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, bucket = excluded.bucket,
       body = excluded.body, created_at = excluded.created_at, updated_at = excluded.updated_at`,
    [
      notes.map((n) => n.id),
      notes.map((n) => n.tenant),
      notes.map((n) => n.bucket),
      notes.map((n) => n.body),
      notes.map((n) => n.createdAt),
      notes.map((n) => n.updatedAt),
    ],
  );
  return notes.length;
}

/** Deletes the notes here with these ids; returns how many there were. */
export async function deleteByIds(db: Queryable, shard: Shard, ids: readonly string[]): Promise<number> {
  if (ids.length === 0) return 0;
  shard.ops++;
  const { rowCount } = await db.query(`DELETE FROM ${shard.table('notes')} WHERE id = ANY($1::uuid[])`, [ids]);
  return rowCount ?? 0;
}

/** Deletes every note of `bucket` here; returns how many there were. */
export async function deleteBucket(db: Queryable, shard: Shard, bucket: number): Promise<number> {
  shard.ops++;
  const { rowCount } = await db.query(`DELETE FROM ${shard.table('notes')} WHERE bucket = $1`, [bucket]);
  return rowCount ?? 0;
}

/**
 * The number of `bucket`'s notes here and a digest of all their columns, in id order: two shards
 * holding the same rows give the same pair, whatever order the rows were written in.
 */
export async function checksum(
  db: Queryable,
  shard: Shard,
  bucket: number,
): Promise<{ count: number; digest: string }> {
  shard.ops++;
  const { rows } = await db.query<{ count: number; digest: string }>(
    `SELECT count(*)::int AS count,
            coalesce(md5(string_agg(concat_ws('|', id, tenant_id, bucket, body,
              ${ts('created_at')}, ${ts('updated_at')}), ',' ORDER BY id)), '') AS digest
     FROM ${shard.table('notes')} WHERE bucket = $1`,
    [bucket],
  );
  return rows[0]!;
}

/** How many notes of `tenant` this shard holds, whatever any router thinks: for the admin view. */
export async function countTenant(db: Queryable, shard: Shard, tenant: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${shard.table('notes')} WHERE tenant_id = $1`,
    [tenant],
  );
  return rows[0]!.n;
}

/** How many notes this shard holds. */
export async function countAll(db: Queryable, shard: Shard): Promise<number> {
  const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${shard.table('notes')}`);
  return rows[0]!.n;
}

/** Notes per tenant on this shard (for the load script's count of what is reachable). */
export async function countByTenant(db: Queryable, shard: Shard): Promise<Map<string, number>> {
  const { rows } = await db.query<{ tenant_id: string; n: number }>(
    `SELECT tenant_id, count(*)::int AS n FROM ${shard.table('notes')} GROUP BY tenant_id`,
  );
  return new Map(rows.map((r) => [r.tenant_id, r.n]));
}
