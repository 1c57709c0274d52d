/**
 * The shard router: which shard holds a tenant's notes, and what happens when a shard is added.
 *
 * This is the version most of us write first: hash the tenant id and take it modulo the number of
 * shards. It needs no table, spreads tenants evenly and every instance agrees (the shard count comes
 * from the catalog). Its trouble starts the day the count changes, and with the tenant that is much
 * bigger than the others.
 *
 * Plumbing you can use: `shards` (list(), get(id), provision(), register(), catalog) in
 * ../server/shards.ts, and the statements on one shard in ../server/notes.ts.
 */
import { randomUUID } from 'node:crypto';
import { hash32 } from '../server/hash.ts';
import * as notes from '../server/notes.ts';
import type { Note, RouterDeps, ShardRouter } from '../server/router.ts';
import type { Shard } from '../server/shards.ts';

/** Rows read per statement when copying a shard. */
const BATCH = 1000;

export function createShardRouter({ shards, hooks }: RouterDeps): ShardRouter {
  // TODO(lab): with hash % N, changing N sends most tenants to a different shard (about 4 in 5 when
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
      // TODO(lab): a tenant marked hot (catalog table hot_tenants) stays on its one shard, which then
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
      // TODO(lab): only the first tenant's shard is asked, so the notes of tenants on other shards
      // never show up.
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
      await hooks.beforeSwitch?.([...tenants]);
      // ...then switch: from now on the count is one higher, and the copies are read...
      // TODO(lab): a write that arrived between the copy and this switch went to the old shard and
      // is left behind there; an update made then is lost too (the new shard has the old copy).
      await shards.register(added);
      // ...and delete the originals.
      for (const { from, ids } of copied) await notes.deleteByIds(from.pool, from, ids);
      return { shard: added.id, rowsMoved, bucketsMoved: 0, pauseMs: 0 };
    },
  };
}
