/**
 * The servers the load script measures, in their own process (forkServers): one world per router
 * (starter, your code when src/ was edited, solution), each four shards seeded with the same notes, and a control app the script asks
 * for what only this process can see: server-side latency of reads and writes, statements per shard,
 * rows per shard, how many acknowledged writes are still reachable, how many keys changed shard, and
 * how many router calls are still running.
 */
import type { RequestListener } from 'node:http';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import { starterEdited, starterVersions } from '@labs/bench';
import { listen, openLab } from '@labs/lab-kit';
import { stopServices } from '@labs/services';
import { createShardRouter as solutionRouter } from '../solution/shard-router.ts';
import lab from '../server/lab.ts';
import * as notes from '../server/notes.ts';
import type { RouterDeps, ShardRouter } from '../server/router.ts';
import { shardSetFor } from '../server/shards.ts';
import { seededTenant } from './workload.ts';

export interface BenchServerOptions {
  /** Tenants seeded, and notes each (tenants x notes rows in all). */
  tenants: number;
  notesPerTenant: number;
  /** Keys whose placement is compared before and after the reshard. */
  keys: number;
  poolSize: number;
  /** The worlds to start (default: every one of WORLDS). */
  worlds?: string[];
}

/** The learner's file: when they have edited it, it runs as "your code" beside the committed starter. */
const STARTER = new URL('../src/shard-router.ts', import.meta.url);

/** The worlds in the order the table shows them: the starter, the learner's edited file, the solution. */
export const WORLDS: readonly string[] = ['starter', ...(starterEdited(STARTER) ? ['your code'] : []), 'solution'];

/** Each world's router: the committed starter (and the learner's edited one), the solution. */
async function implementations(): Promise<Record<string, (deps: RouterDeps) => ShardRouter>> {
  const starters = await starterVersions(
    STARTER,
    (url) => import(url.href) as Promise<typeof import('../src/shard-router.ts')>,
  );
  return {
    ...Object.fromEntries(starters.map(({ name, module }) => [name, module.createShardRouter])),
    solution: solutionRouter,
  };
}

interface World {
  router: ShardRouter;
  shards: Awaited<ReturnType<typeof shardSetFor>>;
  read: RecordableHistogram;
  write: RecordableHistogram;
  opsAtReset: Map<number, number>;
  /** Notes the router stored (its create returned), seeding included; creates still running. */
  committed: { n: number; pending: number };
  /** Router calls still running, of any kind: a request the load generator gave up on still runs its statements. */
  busy: { n: number };
  placementBefore: number[];
}

const keyNames = (count: number) => Array.from({ length: count }, (_, i) => `key-${i}`);

/** Runs `work` over 0..count-1, `width` at a time. */
async function inParallel(count: number, width: number, work: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < count) await work(next++);
    }),
  );
}

export async function start(options: BenchServerOptions) {
  const routers = await implementations();
  const worlds = new Map<string, World>();
  const closers: (() => Promise<void>)[] = [];
  const urls: Record<string, string> = {};

  const wanted = options.worlds ?? WORLDS;
  for (const [name, createRouter] of Object.entries(routers).filter(([name]) => wanted.includes(name))) {
    const opened = await openLab(lab, { purpose: 'bench' });
    // The variant names the world's databases (or schemas): "your code" becomes your_code.
    const variant = name.replace(/\W+/g, '_');
    const committed = { n: 0, pending: 0 };
    const busy = { n: 0 };
    /** `call`, counted in `busy` while it runs. */
    const counted = async <T>(call: () => Promise<T>): Promise<T> => {
      busy.n++;
      try {
        return await call();
      } finally {
        busy.n--;
      }
    };
    closers.push(() => opened.close());
    let router: ShardRouter | undefined;
    const { app } = await lab.build(opened.context, {
      variant,
      poolSize: options.poolSize,
      // Every create the router finished counts as acknowledged: it returns after COMMIT, whether or
      // not the HTTP response still reached a client (the load generator stops mid-request).
      createRouter: (deps: RouterDeps) => {
        const inner = createRouter(deps);
        router = {
          ...inner,
          async create(tenant, bodies) {
            committed.pending++;
            try {
              const created = await counted(() => inner.create(tenant, bodies));
              committed.n += created.length;
              return created;
            } finally {
              committed.pending--;
            }
          },
          update: (tenant, id, body) => counted(() => inner.update(tenant, id, body)),
          list: (tenant) => counted(() => inner.list(tenant)),
          listAcross: (tenants, page) => counted(() => inner.listAcross(tenants, page)),
        };
        return router;
      },
    });
    const shards = await shardSetFor(opened.context, { initial: 4, variant, poolSize: options.poolSize });
    const world: World = {
      router: router!,
      shards,
      read: createHistogram(),
      write: createHistogram(),
      opsAtReset: new Map(),
      committed,
      busy,
      placementBefore: [],
    };
    process.stderr.write(`  seeding ${name}: ${options.tenants} tenants x ${options.notesPerTenant} notes... `);
    const bodies = Array.from({ length: options.notesPerTenant }, (_, i) => `seeded note ${i}`);
    await inParallel(options.tenants, 8, (i) => world.router.create(seededTenant(i), bodies));
    world.placementBefore = (await world.router.locate(keyNames(options.keys))).map(([home]) => home!);
    process.stderr.write('done\n');
    worlds.set(name, world);
    urls[name] = (await opened.context.listen(timed(app, world))).url;
  }

  const control = express();
  control.post('/bench/:world/reset', async (req, res) => {
    const world = worlds.get(req.params.world)!;
    world.read.reset();
    world.write.reset();
    for (const shard of await world.shards.all()) world.opsAtReset.set(shard.id, shard.ops);
    res.json({ ok: true });
  });
  // Router calls still running: asks no database, so a count of round trips around it stays this world's.
  control.get('/bench/:world/busy', (req, res) => {
    res.json({ busy: worlds.get(req.params.world)!.busy.n });
  });
  control.get('/bench/:world/stats', async (req, res) => {
    const world = worlds.get(req.params.world)!;
    const inService = await world.shards.list();
    const rows = await Promise.all(inService.map((s) => notes.countAll(s.pool, s)));
    const ops = inService.map((s) => s.ops - (world.opsAtReset.get(s.id) ?? 0));
    const p99 = (h: RecordableHistogram) => (h.count === 0 ? 0 : h.percentile(99) / 1e6);
    res.json({
      readP99Ms: p99(world.read),
      writeP99Ms: p99(world.write),
      rowsByShard: rows,
      opsByShard: ops,
      ...(req.query.full ? await reachability(world, options.keys) : {}),
    });
  });
  const controlServer = await listen(control);
  closers.unshift(async () => controlServer[Symbol.asyncDispose]());
  urls.control = controlServer.url;

  return {
    urls,
    // Everything at once: forkServers stops this process if closing takes more than a few seconds.
    close: async () => {
      await Promise.allSettled(closers.map((close) => close()));
      await stopServices();
    },
  };
}

/** Wraps `app` so each response's server-side time lands in the world's read or write histogram. */
function timed(app: RequestListener, world: World): RequestListener {
  return (req, res) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const isRead = req.method === 'GET';
      if (req.url?.startsWith('/api/tenants/') || req.url?.startsWith('/api/notes')) {
        (isRead ? world.read : world.write).record(Number(process.hrtime.bigint() - started) || 1);
      }
    });
    app(req, res);
  };
}

/**
 * What the router can still find: every row on a shard the router names for its tenant. Written
 * notes that are not reachable were lost. Also the share of keys whose home shard changed.
 */
async function reachability(world: World, keys: number) {
  // Creates still running (their client gone) would commit behind the count: wait for them, briefly.
  for (let waited = 0; world.committed.pending > 0 && waited < 5000; waited += 10) await sleep(10);
  const tenantsOnShard = await Promise.all(
    (await world.shards.all()).map(async (s) => ({ id: s.id, counts: await notes.countByTenant(s.pool, s) })),
  );
  const tenants = [...new Set(tenantsOnShard.flatMap((s) => [...s.counts.keys()]))];
  const located = await world.router.locate(tenants);
  const where = new Map(tenants.map((t, i) => [t, new Set(located[i])]));
  let reachable = 0;
  for (const { id, counts } of tenantsOnShard) {
    for (const [tenant, n] of counts) if (where.get(tenant)!.has(id)) reachable += n;
  }
  const after = (await world.router.locate(keyNames(keys))).map(([home]) => home!);
  const keysMoved = after.filter((home, i) => home !== world.placementBefore[i]).length;
  return {
    committed: world.committed.n,
    reachable,
    writesLost: world.committed.n - reachable,
    keysMovedShare: keysMoved / keys,
  };
}
