/**
 * The physical side of the lab: the shards, and the small catalog that says which exist.
 *
 * On a PostgreSQL server each shard is a database of its own (`<base>_<variant>_shard_<n>`), as it
 * would be on a server of its own: nothing but the application joins them. The catalog is a schema
 * (named after the variant, `starter` or `solution`) in the lab's own database. On the embedded engine
 * (PGlite: one database) shards and catalog are schemas instead; the code above cannot tell, because
 * every statement names its tables through `shard.table(...)`. Names are unique per test or bench
 * start and dropped when the lab closes; `lab serve` keeps its own, one world per variant.
 *
 * The catalog tables this file owns (a router adds its own, to the catalog and each shard, in `prepare()`):
 *   shards(id, location, in_service)   every shard; a router routes only to those in service
 *   hot_tenants(tenant, fanout)        tenants an operator has split, and over how many buckets
 *   operations(name, started_at)       a lease, so only one reshard runs at a time across instances
 */
import pg from 'pg';
import { boundedPool, createQuietly, type LabContext, uniqueId } from '@labs/lab-kit';
import { createPgPool, databaseUrl, dropDatabase, ensureDatabase, resolveService } from '@labs/services';

/** One physical shard. */
export interface Shard {
  readonly id: number;
  /** Where it lives, for people: a database name (PostgreSQL server) or a schema name (embedded). */
  readonly location: string;
  /** Connections to it (on the embedded engine, shared by every shard). */
  readonly pool: pg.Pool;
  /** `name` qualified with this shard's schema, quoted: `"public"."notes"`. Every statement uses it. */
  table(name: string): string;
  /** Statements the note store has run on this shard: its share of the traffic, for the load script. */
  ops: number;
}

/** The catalog: where the routing configuration is stored, so every instance reads the same. */
export type Catalog = Pick<Shard, 'pool' | 'table'>;

/** The shards of one lab start, and its catalog. */
export interface ShardSet {
  readonly catalog: Catalog;
  /** True on the embedded engine (one database), where shards are schemas of it. */
  readonly embedded: boolean;
  /** The shard with this id (it need not be in service; no query is sent). */
  get(id: number): Shard;
  /** The shards in service, by id, read from the catalog on every call (another instance may add one). */
  list(): Promise<Shard[]>;
  /** Every shard the catalog knows, including one provisioned but not yet in service. */
  all(): Promise<Shard[]>;
  /** Creates the next shard (database or schema, with its notes table), not yet in service. */
  provision(): Promise<Shard>;
  /** Puts a provisioned shard in service: from now on `list()` includes it. */
  register(shard: Shard): Promise<void>;
  /** Runs `work` holding lease `name` (one holder in all instances; one older than 15 min was a crashed holder's), else undefined. */
  exclusive<T>(name: string, work: () => Promise<T>): Promise<{ result: T } | undefined>;
  /**
   * The same catalog and shards, reached through connections of their own wherever `via` rewrites the
   * URL: one instance behind a proxy while the rest of its world connects as before.
   */
  through(via: ConnectVia): ShardSet;
}

/**
 * The fault policy of every pool the API uses (the kit's boundedPool): 2.5 s for a statement, 3 s for a
 * server that cannot answer at all, 3 s to wait for a connection; each is a 503 with Retry-After. A
 * request to a stalled shard is answered within one wait plus one statement: about 3 s, up to 6 s after
 * a queue of almost 3 s (README, "Under faults").
 */
export const DATABASE_POOL_OPTIONS = boundedPool({ statementMs: 2500, answerMs: 3000, connectMs: 3000 });

/**
 * How to open a shard set: the shards created on the first start, the world's name (`starter`,
 * `solution`), connections per pool on a server (one in all on the embedded engine), and a rewrite of
 * the URL a pool connects to (the spec's fault proxy).
 */
export type ShardSetOptions = { initial: number; variant: string; poolSize: number; connectVia?: ConnectVia };
/** Rewrites the URL the catalog's pool or shard `n`'s connects to. */
export type ConnectVia = (url: string, target: 'catalog' | number) => string;

const q = (name: string) => pg.escapeIdentifier(name);

/** The kit's, for routers' DDL: IF NOT EXISTS that survives another instance creating the same at once. */
export { createQuietly };

/**
 * The shard set of `context` (one per lab start, shared by every app instance built on it, as separate
 * processes would share the servers), opened by the first call: catalog, then the initial shards if
 * the catalog has none, then every shard's notes table; all dropped when the lab closes, except for serve.
 */
export function shardSetFor(context: LabContext<unknown>, options: ShardSetOptions): Promise<ShardSet> {
  return context.once('shard set', () => openShardSet(context, options));
}

async function openShardSet(context: LabContext<unknown>, options: ShardSetOptions): Promise<ShardSet> {
  const svc = await resolveService('postgres');
  const kept = context.purpose === 'serve';
  const apiPools = new Map<string, pg.Pool>();
  /** The pool the API uses for `url` (one per URL), with the fault policy; ended when the lab closes. */
  const apiPool = (url: string, max: number, extra: pg.PoolConfig = {}) => {
    if (!apiPools.has(url)) apiPools.set(url, createPgPool(url, { ...DATABASE_POOL_OPTIONS, ...extra, max }));
    return apiPools.get(url)!;
  };
  const via: ConnectVia = (url, target) => options.connectVia?.(url, target) ?? url;

  // The embedded engine serves one database whatever a client asks for, also behind a URL (`lab
  // serve` and the load script reach it that way): a real server answers to the name asked for. The
  // probe is also the maintenance connection that reads which shards exist and drops them at close,
  // straight to the engine and without the API's timeouts, so clean-up works past any fault.
  const probe = await context.database({ max: 1 });
  const probeUrl = probe.options.connectionString ?? svc.url;
  const { rows: current } = await probe.query<{ name: string }>('SELECT current_database() AS name');
  const oneDatabase = svc.provider === 'embedded' || current[0]!.name !== new URL(probeUrl).pathname.slice(1);

  // One engine, one database: everything is a schema, namespaced per start. The API gets one
  // connection (PGlite runs one session, and its socket server interleaves the messages of connections
  // that send at once); a shard the spec routes through a proxy of its own gets its own, which the
  // spec uses only while the engine is otherwise quiet or the proxy lets nothing through.
  const base = oneDatabase
    ? `sharding_${options.variant}${kept ? '' : `_${uniqueId()}`}`
    : `${current[0]!.name}_${options.variant}`;
  const location = (id: number) => `${base}_shard_${id}`;
  const schemaOf = (id: number) => (oneDatabase ? location(id) : 'public');
  const catalogSchema = oneDatabase ? `${base}_catalog` : options.variant;
  const catalog: Catalog = {
    pool: apiPool(via(probeUrl, 'catalog'), oneDatabase ? 1 : options.poolSize),
    table: (name) => `${q(catalogSchema)}.${q(name)}`,
  };
  /** Where shard `id` lives, before any rewrite. */
  const shardUrl = (id: number) => (oneDatabase ? probeUrl : databaseUrl(svc.url, location(id)));
  /** A pool of the API's for a shard at `url`: a connection of its own on the embedded engine. */
  const shardPool = (url: string) =>
    oneDatabase ? apiPool(url, 1) : apiPool(url, options.poolSize, { idleTimeoutMillis: 5000 });
  const poolOf = (id: number) =>
    oneDatabase && via(probeUrl, id) === probeUrl ? catalog.pool : shardPool(via(shardUrl(id), id));

  const shards = new Map<number, Shard>();
  const get = (id: number): Shard => {
    if (!shards.has(id)) {
      const schema = q(schemaOf(id));
      // A pool connects on its first query: one for a shard not yet built costs nothing.
      shards.set(id, { id, location: location(id), pool: poolOf(id), table: (name) => `${schema}.${q(name)}`, ops: 0 });
    }
    return shards.get(id)!;
  };

  /** Creates the shard's database (server) and its notes table, indexed by tenant (reads) and bucket (moves). */
  const build = async (id: number) => {
    if (!oneDatabase) await ensureDatabase(svc.url, location(id));
    const schema = q(schemaOf(id));
    await createQuietly(
      get(id).pool,
      `CREATE SCHEMA IF NOT EXISTS ${schema};
       CREATE TABLE IF NOT EXISTS ${schema}.notes (
         id uuid PRIMARY KEY, tenant_id text NOT NULL, bucket integer NOT NULL, body text NOT NULL,
         created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
       CREATE INDEX IF NOT EXISTS notes_by_tenant ON ${schema}.notes (tenant_id, created_at DESC, id DESC);
       CREATE INDEX IF NOT EXISTS notes_by_bucket ON ${schema}.notes (bucket, id);`,
    );
  };

  const ids = async (inService: boolean, db: pg.Pool = catalog.pool) => {
    const { rows } = await db.query<{ id: number }>(
      `SELECT id FROM ${catalog.table('shards')} ${inService ? 'WHERE in_service' : ''} ORDER BY id`,
    );
    return rows.map((r) => r.id);
  };

  context.onClose(async () => {
    // The API's pools first, so nothing they still send meets the drops below on the embedded engine.
    await Promise.allSettled([...apiPools.values()].map((p) => p.end()));
    const everyShard = await ids(false, probe).catch(() => [...shards.keys()]);
    if (kept) return;
    if (!oneDatabase) {
      // At once: whoever closes us may not wait long (a load script's servers get a few seconds).
      await Promise.allSettled(everyShard.map((id) => dropDatabase(svc.url, location(id))));
      return;
    }
    for (const schema of [...everyShard.map(location), catalogSchema]) {
      await probe.query(`DROP SCHEMA IF EXISTS ${q(schema)} CASCADE`).catch(() => 0);
    }
  });

  await createQuietly(
    catalog.pool,
    `CREATE SCHEMA IF NOT EXISTS ${q(catalogSchema)};
     CREATE TABLE IF NOT EXISTS ${catalog.table('shards')} (id integer PRIMARY KEY, location text NOT NULL,
       in_service boolean NOT NULL DEFAULT false, created_at timestamptz NOT NULL DEFAULT now());
     CREATE TABLE IF NOT EXISTS ${catalog.table('hot_tenants')} (tenant text PRIMARY KEY,
       fanout integer NOT NULL CHECK (fanout BETWEEN 1 AND 64));
     CREATE TABLE IF NOT EXISTS ${catalog.table('operations')} (name text PRIMARY KEY,
       started_at timestamptz NOT NULL DEFAULT now());`,
  );
  // The first start creates the initial shards; every start after it finds them.
  await catalog.pool.query(
    `INSERT INTO ${catalog.table('shards')} (id, location, in_service)
     SELECT g, $2::text || g, true FROM generate_series(0, $1 - 1) g
     WHERE NOT EXISTS (SELECT 1 FROM ${catalog.table('shards')}) ON CONFLICT DO NOTHING`,
    [options.initial, `${base}_shard_`],
  );
  // On a server, the shards' databases are created side by side (four CREATE DATABASE took 0.9 s one
  // after another here, 0.4 s at once); the embedded engine takes one connection's statements at a time.
  const existing = await ids(false);
  if (oneDatabase) for (const id of existing) await build(id);
  else await Promise.all(existing.map(build));

  /** Claims the next id in the catalog first, so two instances provisioning at once get different ids. */
  async function provision(): Promise<Shard> {
    const { rows } = await catalog.pool.query<{ id: number }>(
      `INSERT INTO ${catalog.table('shards')} (id, location)
       SELECT n, $1::text || n FROM (SELECT coalesce(max(id) + 1, 0) AS n FROM ${catalog.table('shards')}) s
       ON CONFLICT DO NOTHING RETURNING id`,
      [`${base}_shard_`],
    );
    if (rows.length === 0) return provision();
    await build(rows[0]!.id);
    return get(rows[0]!.id);
  }

  /** The set as one instance sees it through `rewrite`: the shards and catalog it changes get pools of their own. */
  function through(rewrite: ConnectVia): ShardSet {
    const own = new Map<number, Shard>();
    const ownGet = (id: number): Shard => {
      const url = rewrite(shardUrl(id), id);
      if (url === shardUrl(id)) return get(id);
      if (!own.has(id)) own.set(id, { ...get(id), pool: shardPool(url), ops: 0 });
      return own.get(id)!;
    };
    const catalogUrl = rewrite(probeUrl, 'catalog');
    const ownCatalog =
      catalogUrl === probeUrl ? catalog : { ...catalog, pool: apiPool(catalogUrl, oneDatabase ? 1 : options.poolSize) };
    return {
      ...set,
      catalog: ownCatalog,
      get: ownGet,
      list: async () => (await ids(true, ownCatalog.pool)).map(ownGet),
      all: async () => (await ids(false, ownCatalog.pool)).map(ownGet),
      provision: async () => ownGet((await provision()).id),
    };
  }

  const set: ShardSet = {
    catalog,
    embedded: oneDatabase,
    get,
    list: async () => (await ids(true)).map(get),
    all: async () => (await ids(false)).map(get),
    provision,
    through,
    async register(shard) {
      await catalog.pool.query(`UPDATE ${catalog.table('shards')} SET in_service = true WHERE id = $1`, [shard.id]);
    },
    async exclusive(name, work) {
      const { rowCount } = await catalog.pool.query(
        `INSERT INTO ${catalog.table('operations')} AS o (name) VALUES ($1)
         ON CONFLICT (name) DO UPDATE SET started_at = now() WHERE o.started_at < now() - interval '15 minutes'`,
        [name],
      );
      if (rowCount !== 1) return undefined;
      try {
        return { result: await work() };
      } finally {
        await catalog.pool.query(`DELETE FROM ${catalog.table('operations')} WHERE name = $1`, [name]);
      }
    },
  };
  return set;
}
