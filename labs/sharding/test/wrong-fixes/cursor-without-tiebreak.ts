/**
 * Wrong fix: scatter-gather with a cursor on the date alone. Every shard is asked and the lists are
 * merged newest first, but the next page starts at `created_at < last created_at`. Notes written in
 * one batch share their created_at, so when a page ends inside such a batch, the rest of the batch is
 * skipped (and with `<=` instead, repeated). The cursor needs a unique sort key: (created_at, id).
 *
 * @catches a page across shards holds exactly the notes of one big query, in order, with no duplicates across pages
 */
import { randomUUID } from 'node:crypto';
import { hash32 } from '../../server/hash.ts';
import * as notes from '../../server/notes.ts';
import type { Note, RouterDeps, ShardRouter } from '../../server/router.ts';
import type { Shard } from '../../server/shards.ts';

/** Rows read per statement when copying a shard. */
const BATCH = 1000;

export function createShardRouter({ shards, hooks }: RouterDeps): ShardRouter {
  // (Still as in the starter.) with hash % N, changing N sends most tenants to a different shard (about 4 in 5 when
  // a fifth shard joins four), and every one of their rows has to move.
  const shardIndex = (tenant: string, count: number) => hash32(tenant) % count;

  /** The shard of `tenant`, by the shard count in the catalog (so every instance agrees). */
  async function shardOf(tenant: string): Promise<Shard> {
    const inService = await shards.list();
    return inService[shardIndex(tenant, inService.length)]!;
  }

  return {
    async prepare() {
      // Nothing of its own to create: the catalog's list of shards is all this router reads.
    },

    async locate(tenants) {
      const inService = await shards.list();
      // (Still as in the starter.) a tenant marked hot (catalog table hot_tenants) stays on its one shard, which then
      // carries all of that tenant's traffic.
      return tenants.map((tenant) => [inService[shardIndex(tenant, inService.length)]!.id]);
    },

    async create(tenant, bodies) {
      const shard = await shardOf(tenant);
      // A modulo router has no buckets: the shard index is all it can record.
      return notes.insert(
        shard.pool,
        shard,
        bodies.map((body) => ({ id: randomUUID(), tenant, bucket: shard.id, body })),
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
      const inService = await shards.list();
      const wanted = new Set(tenants.map((t) => shardIndex(t, inService.length)));
      const parts = await Promise.all(
        inService
          .filter((_, i) => wanted.has(i))
          .map(async (shard) => {
            const { rows } = await shard.pool.query<{ id: string }>(
              `SELECT id FROM ${shard.table('notes')}
               WHERE tenant_id = ANY($1) AND ($2::timestamptz IS NULL OR created_at < $2)
               ORDER BY created_at DESC LIMIT $3`,
              [tenants, page.after?.createdAt ?? null, page.limit + 1],
            );
            return notes.byIds(
              shard.pool,
              shard,
              rows.map((r) => r.id),
            );
          }),
      );
      const merged = parts
        .flat()
        .sort((a, b) => (a.createdAt === b.createdAt ? (a.id < b.id ? 1 : -1) : a.createdAt < b.createdAt ? 1 : -1));
      const onPage = merged.slice(0, page.limit);
      const last = onPage.at(-1);
      return {
        notes: onPage,
        next: merged.length > page.limit && last ? { createdAt: last.createdAt, id: last.id } : null,
      };
    },

    async addShard() {
      const before = await shards.list();
      const added = await shards.provision();
      const after = [...before, added];
      // Copy every row whose tenant hashes elsewhere once there is one shard more...
      const copied: { from: Shard; ids: string[] }[] = [];
      const tenants = new Set<string>();
      let rowsMoved = 0;
      for (const shard of before) {
        for (let afterId: string | undefined; ; ) {
          const rows = await notes.scan(shard.pool, shard, { afterId, limit: BATCH });
          if (rows.length === 0) break;
          afterId = rows.at(-1)!.id;
          const leaving = new Map<Shard, Note[]>();
          for (const row of rows) {
            const target = after[shardIndex(row.tenant, after.length)]!;
            if (target === shard) continue;
            if (!leaving.has(target)) leaving.set(target, []);
            leaving.get(target)!.push(row);
            tenants.add(row.tenant);
          }
          for (const [target, moving] of leaving) {
            rowsMoved += await notes.upsert(target.pool, target, moving);
            copied.push({ from: shard, ids: moving.map((r) => r.id) });
          }
        }
      }
      await hooks.afterCopy?.([...tenants]);
      // ...then switch: from now on the count is one higher, and the copies are read...
      // (Still as in the starter.) a write that arrived between the copy and this switch went to the old shard and
      // is left behind there; an update made then is lost too (the new shard has the old copy).
      await shards.register(added);
      // ...and delete the originals.
      for (const { from, ids } of copied) await notes.deleteByIds(from.pool, from, ids);
      return { shard: added.id, rowsMoved, bucketsMoved: 0, pauseMs: 0 };
    },
  };
}
