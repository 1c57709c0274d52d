/**
 * The sharding lab, described once: `lab serve`, the spec and the load script all start it from here.
 * Config: SHARDS (default 4), the number of shards created on the first start; after that the catalog
 * decides, so a restart finds the shards, and the routing, it had.
 */
import { createShardRouter } from '#shard-router';
import { defineLab, wholeNumber, z } from '@labs/lab-kit';
import { createApp } from './app.ts';
import type { MoveHooks, RouterDeps, ShardRouter } from './router.ts';
import { type ConnectVia, shardSetFor } from './shards.ts';

/** What a spec or load script may set instead of the defaults. */
export interface ShardingLabOptions {
  /** The router implementation (default: the learner's file, or the solution with --solution). */
  createRouter: (deps: RouterDeps) => ShardRouter;
  /** Called by the router during a reshard; the spec writes there. */
  hooks: MoveHooks;
  /** Names this start's world of shards (default: the target, `starter` or `solution`). */
  variant: string;
  /** Connections per pool (default 4). */
  poolSize: number;
  /** Rewrites the URL the catalog's or a shard's pool connects to (a fault proxy); read by a context's first build. */
  connectVia: ConnectVia;
  /**
   * Rewrites the URLs this instance alone connects to: it gets pools of its own for the shards (or the
   * catalog) this changes, so a proxy stands in front of one instance while its world connects as before.
   */
  ownConnectionsVia: ConnectVia;
}

export default defineLab<{ SHARDS: number }, ShardingLabOptions>({
  config: z.object({ SHARDS: wholeNumber({ fallback: 4, min: 2, max: 16 }) }),
  async build(context, options) {
    // Every instance built on one context shares its shards and catalog, as processes share servers;
    // each gets a router of its own, so nothing but the catalog can make them agree.
    const world = await shardSetFor(context, {
      initial: context.config.SHARDS,
      variant: options.variant ?? context.target,
      poolSize: options.poolSize ?? 4,
      connectVia: options.connectVia,
    });
    const shards = options.ownConnectionsVia ? world.through(options.ownConnectionsVia) : world;
    const router = (options.createRouter ?? createShardRouter)({ shards, hooks: options.hooks ?? {} });
    await router.prepare();
    const where = (await shards.list()).map((s) => s.location).join(', ');
    return {
      app: createApp({ router, shards }),
      usage: (url) => [
        `Shards: ${where} (${shards.embedded ? 'schemas of the embedded engine' : 'databases'})`,
        `Write: curl -s -X POST ${url}/api/tenants/acme/notes -H 'content-type: application/json' -d '{"notes":[{"body":"hello"}]}'`,
        `Read:  curl -s ${url}/api/tenants/acme/notes`,
        `Where: curl -s ${url}/api/admin/tenants/acme ; curl -s ${url}/api/admin/shards`,
        `Page:  curl -s '${url}/api/notes?tenants=acme,globex,initech&limit=5'`,
        `Grow:  curl -s -X POST ${url}/api/admin/shards`,
      ],
    };
  },
});
