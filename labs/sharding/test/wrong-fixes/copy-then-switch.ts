/**
 * Wrong fix: logical buckets in a catalog table (so adding a shard moves only a fifth of them), each
 * moved by "copy its rows, point the catalog at the new shard, delete it from the old one". Nothing
 * stops or records the writes that arrive while a bucket is being copied: they land on the old shard
 * after their row was copied (a new note is then deleted with the bucket, an edit is overwritten by
 * the older copy), and a request that read the catalog just before the switch still writes to the old
 * shard after it. Moving data online needs a catch-up of what changed during the copy, a short freeze
 * for the last of it, and a check on the shard itself that it still owns the bucket.
 *
 * @catches a reshard under concurrent writes loses no write and serves no stale or misplaced note
 */
import { randomUUID } from 'node:crypto';
import { hash32 } from '../../server/hash.ts';
import * as notes from '../../server/notes.ts';
import type { RouterDeps, ShardRouter } from '../../server/router.ts';
import { createQuietly, type Shard } from '../../server/shards.ts';

const BUCKETS = 256;
const BATCH = 500;

export function createShardRouter({ shards, hooks }: RouterDeps): ShardRouter {
  const { catalog } = shards;
  const bucketOf = (tenant: string) => hash32(tenant) % BUCKETS;

  async function shardOf(tenant: string): Promise<Shard> {
    const { rows } = await catalog.pool.query<{ shard: number }>(
      `SELECT shard FROM ${catalog.table('buckets')} WHERE bucket = $1`,
      [bucketOf(tenant)],
    );
    return shards.get(rows[0]!.shard);
  }

  async function readMap(): Promise<Map<number, number>> {
    const { rows } = await catalog.pool.query<{ bucket: number; shard: number }>(
      `SELECT bucket, shard FROM ${catalog.table('buckets')}`,
    );
    return new Map(rows.map((r) => [r.bucket, r.shard]));
  }

  return {
    async prepare() {
      await createQuietly(
        catalog.pool,
        `CREATE TABLE IF NOT EXISTS ${catalog.table('buckets')} (bucket integer PRIMARY KEY, shard integer NOT NULL)`,
      );
      const ids = (await shards.list()).map((s) => s.id);
      await catalog.pool.query(
        `INSERT INTO ${catalog.table('buckets')} (bucket, shard)
         SELECT g, ($2::int[])[g % cardinality($2::int[]) + 1] FROM generate_series(0, $1 - 1) g
         ON CONFLICT DO NOTHING`,
        [BUCKETS, ids],
      );
    },

    async locate(tenants) {
      const map = await readMap();
      return tenants.map((tenant) => [map.get(bucketOf(tenant))!]);
    },

    async create(tenant, bodies) {
      const shard = await shardOf(tenant);
      return notes.insert(
        shard.pool,
        shard,
        bodies.map((body) => ({ id: randomUUID(), tenant, bucket: bucketOf(tenant), body })),
      );
    },

    async update(tenant, id, body) {
      const shard = await shardOf(tenant);
      return notes.update(shard.pool, shard, { tenant, id, body });
    },

    async list(tenant) {
      const shard = await shardOf(tenant);
      return notes.list(shard.pool, shard, { tenant });
    },

    async listAcross(tenants, page) {
      const shard = await shardOf(tenants[0]!);
      const rows = await notes.page(shard.pool, shard, { tenants, after: page.after, limit: page.limit + 1 });
      const onPage = rows.slice(0, page.limit);
      const last = onPage.at(-1);
      return {
        notes: onPage,
        next: rows.length > page.limit && last ? { createdAt: last.createdAt, id: last.id } : null,
      };
    },

    async addShard() {
      const before = await shards.list();
      const added = await shards.provision();
      await shards.register(added);
      const map = await readMap();
      const owned = new Map(before.map((s) => [s.id, [...map].filter(([, id]) => id === s.id).map(([b]) => b)]));
      const fairShare = Math.floor(BUCKETS / (before.length + 1));
      let rowsMoved = 0;
      for (let moved = 0; moved < fairShare; moved++) {
        const [from, buckets] = [...owned].reduce((a, b) => (b[1].length > a[1].length ? b : a));
        const bucket = buckets.pop()!;
        const source = shards.get(from);
        const tenants = new Set<string>();
        for (let afterId: string | undefined; ; ) {
          const rows = await notes.scan(source.pool, source, { bucket, afterId, limit: BATCH });
          if (rows.length === 0) break;
          rowsMoved += await notes.upsert(added.pool, added, rows);
          for (const row of rows) tenants.add(row.tenant);
          afterId = rows.at(-1)!.id;
        }
        if (tenants.size > 0) await hooks.afterCopy?.([...tenants]);
        if (tenants.size > 0) await hooks.beforeSwitch?.([...tenants]);
        await catalog.pool.query(`UPDATE ${catalog.table('buckets')} SET shard = $2 WHERE bucket = $1`, [
          bucket,
          added.id,
        ]);
        await notes.deleteBucket(source.pool, source, bucket);
      }
      return { shard: added.id, rowsMoved, bucketsMoved: fairShare, pauseMs: 0 };
    },
  };
}
