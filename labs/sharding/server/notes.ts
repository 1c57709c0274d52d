/**
 * The note store: every statement the lab runs against one shard's `notes` table; a router decides
 * which shard each runs on. Each run counts one statement on the shard (`shard.ops`), the load script's
 * measure of its traffic. A request's statements also come unrun (`insertSql`, `updateSql`, `listSql`,
 * `pageSql`) with a `gate`, an SQL condition every row must also meet: a router can put a check of its
 * own (a fence) into the same statement as the work, and pay one round trip for both.
 *
 * Timestamps travel as fixed-width UTC text with microseconds (`2026-01-31T09:15:02.123456Z`): exact,
 * so a cursor built from one finds the same row again, and ordered the same way as text and as time.
 */
import type pg from 'pg';
import type { Cursor, Note } from './router.ts';
import type { Shard } from './shards.ts';

/** A pool, or one client of it inside a transaction. */
type Queryable = pg.Pool | pg.PoolClient;

/** An SQL statement with its parameters ($1, $2, ...), not yet run. */
export interface Statement {
  text: string;
  values: unknown[];
}

/** A note to insert: the router chose its id and its bucket. */
export type NewNote = Pick<Note, 'id' | 'tenant' | 'bucket' | 'body'>;

/** The greatest number of notes a tenant's list returns (newest first); a larger list pages instead. */
export const TENANT_LIST_LIMIT = 1000;

const ts = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
/** The columns a statement returns: a note, as the API returns it, but for its shard. */
export const COLUMNS = `id, tenant_id AS tenant, bucket, body, ${ts('created_at')} AS "createdAt", ${ts('updated_at')} AS "updatedAt"`;
/** Newest first; the id breaks ties between notes written in the same transaction (same created_at). */
const ORDER = 'ORDER BY created_at DESC, id DESC';

/** A row of COLUMNS, read from `shard`. */
export const toNote = (row: Omit<Note, 'shard'>, shard: Shard): Note => ({ ...row, shard: shard.id });

/** Runs `statement` on `shard` (counted) and returns its rows as notes. */
export async function run(db: Queryable, shard: Shard, statement: Statement): Promise<Note[]> {
  shard.ops++;
  const { rows } = await db.query<Omit<Note, 'shard'>>(statement.text, statement.values);
  return rows.map((r) => toNote(r, shard));
}

/** Inserts `notes` in one statement (so they share one created_at). */
export const insertSql = (shard: Shard, notes: readonly NewNote[], gate = 'true'): Statement => ({
  text: `INSERT INTO ${shard.table('notes')} (id, tenant_id, bucket, body)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[]) WHERE ${gate}
         RETURNING ${COLUMNS}`,
  values: [notes.map((n) => n.id), notes.map((n) => n.tenant), notes.map((n) => n.bucket), notes.map((n) => n.body)],
});

/** Which of a tenant's notes a statement reads or changes: only those in `buckets`, when given. */
type TenantNotes = { tenant: string; buckets?: readonly number[] };
/** A page of the notes of several tenants (see pageSql). */
type PageQuery = { tenants: readonly string[]; buckets?: readonly number[]; after?: Cursor; limit: number };

/** Sets a note's body, if the tenant has it here (in `buckets`, when given). */
export const updateSql = (
  shard: Shard,
  change: TenantNotes & { id: string; body: string },
  gate = 'true',
): Statement => ({
  text: `UPDATE ${shard.table('notes')} SET body = $3, updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND ($4::int[] IS NULL OR bucket = ANY($4)) AND ${gate}
         RETURNING ${COLUMNS}`,
  values: [change.tenant, change.id, change.body, change.buckets ?? null],
});

/** A tenant's notes here, newest first (at most TENANT_LIST_LIMIT), only from `buckets` when given. */
export const listSql = (shard: Shard, query: TenantNotes, gate = 'true'): Statement => ({
  text: `SELECT ${COLUMNS} FROM ${shard.table('notes')}
         WHERE tenant_id = $1 AND ($2::int[] IS NULL OR bucket = ANY($2)) AND ${gate}
         ${ORDER} LIMIT ${TENANT_LIST_LIMIT}`,
  values: [query.tenant, query.buckets ?? null],
});

/**
 * One keyset page of the notes of `tenants` here, newest first: at most `limit` notes strictly after
 * `after` in that order (created_at DESC, id DESC). Only from `buckets` when given.
 */
export const pageSql = (shard: Shard, query: PageQuery, gate = 'true'): Statement => ({
  text: `SELECT ${COLUMNS} FROM ${shard.table('notes')}
         WHERE tenant_id = ANY($1) AND ($2::int[] IS NULL OR bucket = ANY($2)) AND ${gate}
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::uuid))
         ${ORDER} LIMIT $5`,
  values: [query.tenants, query.buckets ?? null, query.after?.createdAt ?? null, query.after?.id ?? null, query.limit],
});

/** Inserts `notes` and returns them in the order given. */
export async function insert(db: Queryable, shard: Shard, notes: readonly NewNote[]): Promise<Note[]> {
  const byId = new Map((await run(db, shard, insertSql(shard, notes))).map((n) => [n.id, n]));
  return notes.map((n) => byId.get(n.id)!);
}

/** Sets a note's body; undefined when the tenant has no such note here. */
export const update = async (db: Queryable, shard: Shard, change: Parameters<typeof updateSql>[1]) =>
  (await run(db, shard, updateSql(shard, change)))[0];
export const list = (db: Queryable, shard: Shard, query: Parameters<typeof listSql>[1]) =>
  run(db, shard, listSql(shard, query));
export const page = (db: Queryable, shard: Shard, query: Parameters<typeof pageSql>[1]) =>
  run(db, shard, pageSql(shard, query));

/** Every note here in id order, `limit` at a time after `afterId`: only `bucket`'s when given. */
export const scan = (db: Queryable, shard: Shard, query: { bucket?: number; afterId?: string; limit: number }) =>
  run(db, shard, {
    text: `SELECT ${COLUMNS} FROM ${shard.table('notes')}
           WHERE ($1::int IS NULL OR bucket = $1) AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3`,
    values: [query.bucket ?? null, query.afterId ?? null, query.limit],
  });

/** The notes here with these ids (those that exist). */
export const byIds = (db: Queryable, shard: Shard, ids: readonly string[]) =>
  run(db, shard, { text: `SELECT ${COLUMNS} FROM ${shard.table('notes')} WHERE id = ANY($1::uuid[])`, values: [ids] });

/** Writes `notes` here exactly as given (all columns, timestamps included), replacing any with the same id. */
export async function upsert(db: Queryable, shard: Shard, notes: readonly Note[]): Promise<number> {
  if (notes.length === 0) return 0;
  const columns = ['id', 'tenant', 'bucket', 'body', 'createdAt', 'updatedAt'] as const;
  await run(db, shard, {
    text: `INSERT INTO ${shard.table('notes')} AS n (id, tenant_id, bucket, body, created_at, updated_at)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::timestamptz[])
           ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, bucket = excluded.bucket,
             body = excluded.body, created_at = excluded.created_at, updated_at = excluded.updated_at`,
    values: columns.map((key) => notes.map((n) => n[key])),
  });
  return notes.length;
}

/** Deletes the notes here that match `where` (counted); returns how many there were. */
async function remove(db: Queryable, shard: Shard, where: string, value: unknown): Promise<number> {
  shard.ops++;
  return (await db.query(`DELETE FROM ${shard.table('notes')} WHERE ${where}`, [value])).rowCount ?? 0;
}
/** Deletes the notes here with these ids; returns how many there were. */
export const deleteByIds = async (db: Queryable, shard: Shard, ids: readonly string[]) =>
  ids.length === 0 ? 0 : remove(db, shard, 'id = ANY($1::uuid[])', ids);
/** Deletes every note of `bucket` here; returns how many there were. */
export const deleteBucket = (db: Queryable, shard: Shard, bucket: number) => remove(db, shard, 'bucket = $1', bucket);

/** The number of `bucket`'s notes here and a digest of all their columns, in id order: equal on two shards holding the same rows. */
export async function checksum(
  db: Queryable,
  shard: Shard,
  bucket: number,
): Promise<{ count: number; digest: string }> {
  shard.ops++;
  const { rows } = await db.query(
    `SELECT count(*)::int AS count, coalesce(md5(string_agg(concat_ws('|', id, tenant_id, bucket, body,
       ${ts('created_at')}, ${ts('updated_at')}), ',' ORDER BY id)), '') AS digest
     FROM ${shard.table('notes')} WHERE bucket = $1`,
    [bucket],
  );
  return rows[0];
}

/** Notes per tenant here, whatever any router thinks (of `tenant` alone, when given): what is really where. */
export async function countByTenant(db: Queryable, shard: Shard, tenant?: string): Promise<Map<string, number>> {
  const { rows } = await db.query<{ tenant_id: string; n: number }>(
    `SELECT tenant_id, count(*)::int AS n FROM ${shard.table('notes')}
     WHERE $1::text IS NULL OR tenant_id = $1 GROUP BY tenant_id`,
    [tenant ?? null],
  );
  return new Map(rows.map((r) => [r.tenant_id, r.n]));
}

/** How many notes this shard holds. */
export async function countAll(db: Queryable, shard: Shard): Promise<number> {
  const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${shard.table('notes')}`);
  return rows[0]!.n;
}
