/**
 * The physical side of the lab: the shards, and the small catalog that says which exist.
 *
 * On a PostgreSQL server each shard is a database of its own (`<base>_<variant>_shard_<n>`), as it
 * would be on a server of its own in production: nothing but the application joins them. The catalog
 * is a schema (named after the variant, `starter` or `solution`) in the lab's own database. On the
 * embedded engine (PGlite: one database per engine) the shards and the catalog are schemas instead
 * (`sharding_<variant>[_<id>]_shard_<n>`); the code above this file cannot tell the difference, because
 * every statement names its tables through `shard.table(...)`.
 *
 * Names are unique per test or bench start and dropped when the lab closes; `lab serve` keeps its own
 * (`labs_sharding_starter_shard_0`, ...) so a restart finds its data, one world per variant so the
 * starter and the solution never read each other's rows.
 *
 * The catalog tables this file owns:
 *   shards(id, location, in_service)   every shard that exists; a router routes only to those in service
 *   hot_tenants(tenant, fanout)        tenants an operator has marked hot, and over how many buckets to split them
 *   operations(name, started_at)       a lease, so only one reshard runs at a time across instances
 * A router adds its own tables (its mapping) to the catalog and to each shard in `prepare()`.
 */
import pg from 'pg';
import { type LabContext, uniqueId } from '@labs/lab-kit';
import { createPgPool, databaseUrl, dropDatabase, ensureDatabase, resolveService } from '@labs/services';

/** One physical shard. */
export interface Shard {
  readonly id: number;
  /** Where it lives, for people: a database name (PostgreSQL server) or a schema name (embedded). */
  readonly location: string;
  /** Connections to it (created on first use; on the embedded engine, shared by every shard). */
  readonly pool: pg.Pool;
  /** `name` qualified with this shard's schema, quoted: `"public"."notes"`. Every statement uses it. */
  table(name: string): string;
  /** Statements the note store has run on this shard: its share of the traffic, for the load script. */
  ops: number;
}

/** The catalog: where the routing configuration is stored, so every instance reads the same. */
export interface Catalog {
  readonly pool: pg.Pool;
  /** `name` qualified with the catalog's schema, quoted. */
  table(name: string): string;
}

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
  /**
   * Runs `work` while holding the catalog lease `name` (one holder across every instance); resolves
   * undefined without running it when someone else holds the lease. A lease older than 15 minutes is
   * taken as abandoned by a crashed holder.
   */
  exclusive<T>(name: string, work: () => Promise<T>): Promise<{ result: T } | undefined>;
}

/**
 * The fault policy of every pool the API's requests go through (the catalog's and each shard's). A
 * request here runs a handful of indexed statements, so a few seconds is already an outage, and a
 * shard that stops answering must cost a request seconds, never the length of the stall:
 * - `statement_timeout` (2.5 s): the server cancels a statement that runs or waits for a lock too long;
 * - `query_timeout` (3 s): the client gives up on a server that cannot answer at all (a frozen host, a
 *   network path that drops everything), where the server's own timeout never gets a say;
 * - `connectionTimeoutMillis` (3 s): opening a connection, or waiting for a free one in the pool, is
 *   bounded too (a stalled shard holds its pool's connections until their queries time out).
 * The app answers each of these failures with a 503 and Retry-After (server/app.ts). The bulk work of a
 * reshard is batched (a few hundred rows a statement), so it stays far inside these bounds.
 *
 * The bound that holds for a request to a stalled shard is therefore one wait plus one statement:
 * about 3 s when the request finds a connection at once or only queues behind requests the stall holds
 * too (measured with 20 requests at once, 10 of them for the stalled shard: at most 3.2 s), and up to 6 s when it
 * queued almost 3 s behind a pool busy with healthy work and got its connection just as the stall began.
 */
export const DATABASE_POOL_OPTIONS: pg.PoolConfig = {
  statement_timeout: 2500,
  query_timeout: 3000,
  connectionTimeoutMillis: 3000,
};

/** Which pool a URL is for: the catalog's, or shard `n`'s. */
export type PoolTarget = 'catalog' | number;

/** How to open a shard set. */
export interface ShardSetOptions {
  /** Shards created on the first start (the catalog remembers them afterwards). */
  initial: number;
  /** Names the world: `starter`, `solution` (one world per router implementation). */
  variant: string;
  /** Connections per shard pool on a server (on the embedded engine the API gets one connection in all). */
  poolSize: number;
  /**
   * Rewrites the URL the catalog's pool or a shard's pool connects to; the spec puts a fault proxy in
   * front of one of them. On the embedded engine the catalog's connection is also every shard's, except
   * for a shard this sends elsewhere, which then gets a connection of its own.
   */
  connectVia?: (url: string, target: PoolTarget) => string;
}

const q = (name: string) => pg.escapeIdentifier(name);

/** The notes table every shard holds, and its indexes: by tenant (reads, pages) and by bucket (moves). */
function notesDdl(schema: string): string {
  return `
    CREATE SCHEMA IF NOT EXISTS ${q(schema)};
    CREATE TABLE IF NOT EXISTS ${q(schema)}.notes (
      id uuid PRIMARY KEY,
      tenant_id text NOT NULL,
      bucket integer NOT NULL,
      body text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS notes_by_tenant ON ${q(schema)}.notes (tenant_id, created_at DESC, id DESC);
    CREATE INDEX IF NOT EXISTS notes_by_bucket ON ${q(schema)}.notes (bucket, id);`;
}

function catalogDdl(schema: string): string {
  return `
    CREATE SCHEMA IF NOT EXISTS ${q(schema)};
    CREATE TABLE IF NOT EXISTS ${q(schema)}.shards (
      id integer PRIMARY KEY,
      location text NOT NULL,
      in_service boolean NOT NULL DEFAULT false,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS ${q(schema)}.hot_tenants (
      tenant text PRIMARY KEY,
      fanout integer NOT NULL CHECK (fanout BETWEEN 1 AND 64)
    );
    CREATE TABLE IF NOT EXISTS ${q(schema)}.operations (
      name text PRIMARY KEY,
      started_at timestamptz NOT NULL DEFAULT now()
    );`;
}

/**
 * Runs DDL written with IF NOT EXISTS. Two processes creating the same table at once can still collide
 * in PostgreSQL's own catalog (a unique violation on pg_type, or "already exists"): the loser's table
 * exists all the same, so those errors are answered, not reported.
 */
export async function createQuietly(db: pg.Pool | pg.PoolClient, sql: string): Promise<void> {
  try {
    await db.query(sql);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code !== '23505' && code !== '42P07' && code !== '42P06' && code !== '42710') throw error;
    await db.query(sql); // the other creator has committed by now; what is left to create, create
  }
}

const sets = new WeakMap<object, Promise<ShardSet>>();

/**
 * The shard set of `context` (one per lab start, shared by every app instance built on it, as separate
 * processes would share the servers). Created on first call: catalog, then the initial shards if the
 * catalog has none, then every shard's notes table; all dropped when the lab closes, except for serve.
 */
export function shardSetFor(context: LabContext<unknown>, options: ShardSetOptions): Promise<ShardSet> {
  let set = sets.get(context);
  if (!set) {
    set = openShardSet(context, options);
    sets.set(context, set);
  }
  return set;
}

async function openShardSet(context: LabContext<unknown>, options: ShardSetOptions): Promise<ShardSet> {
  const svc = await resolveService('postgres');
  const kept = context.purpose === 'serve';
  const pools = new Map<number, pg.Pool>();
  const apiPools: pg.Pool[] = [];
  /** Where the pool for `target` connects: `url`, unless the spec routes it through a fault proxy. */
  const via = (url: string, target: PoolTarget) => options.connectVia?.(url, target) ?? url;
  /** A pool the API's requests use, with the fault policy; ended when the lab closes. */
  const apiPool = (url: string, max: number, extra: pg.PoolConfig = {}) => {
    const pool = createPgPool(url, { ...DATABASE_POOL_OPTIONS, ...extra, max });
    apiPools.push(pool);
    return pool;
  };

  let catalogPool: pg.Pool;
  let catalogSchema: string;
  let location: (id: number) => string;
  let schemaOf: (id: number) => string;
  let poolOf: (id: number) => pg.Pool;

  // The embedded engine serves one database whatever a client asks for, also when it reaches us as a
  // URL (\`lab serve\` and the load script get the command line's engine that way). So ask: on a
  // server that really has databases, the kit's own database answers to its name.
  //
  // The probe is also the lab's maintenance connection: it reads which shards exist and drops them when
  // the lab closes, straight to the engine (never through `connectVia`) and without the API's timeouts,
  // so clean-up works while a spec holds a shard down or stalled, and a large drop is not cut short.
  const probe = await context.database({ max: 1 });
  const probeUrl = probe.options.connectionString ?? svc.url;
  const asked = new URL(probeUrl).pathname.slice(1);
  const { rows: current } = await probe.query<{ name: string }>('SELECT current_database() AS name');
  const oneDatabase = svc.provider === 'embedded' || current[0]!.name !== asked;

  if (oneDatabase) {
    // One engine, one database: everything is a schema, namespaced so several lab starts in one test
    // file (each test that reshards has a world of its own) never meet. One connection for the API:
    // PGlite runs one session, and its socket server (pglite-socket 0.2) interleaves the protocol
    // messages of connections that send at the same time outside a transaction ("portal does not
    // exist"). The engine runs one statement at a time anyway, so a queue in the pool costs nothing.
    const base = kept ? `sharding_${options.variant}` : `sharding_${options.variant}_${uniqueId()}`;
    // The API's one connection is not the probe's: it has the fault policy (and maybe a fault proxy).
    // The probe stays idle until the lab closes, so the two never send at the same time.
    const api = apiPool(via(probeUrl, 'catalog'), 1);
    catalogPool = api;
    catalogSchema = `${base}_catalog`;
    location = (id) => `${base}_shard_${id}`;
    schemaOf = location;
    // A shard the spec routes through a fault proxy of its own gets a connection of its own, so it can
    // fail while the others answer. The spec sends to it only while the engine is otherwise quiet, or
    // while it fails (a proxy that refuses or holds everything lets nothing reach the engine), so it
    // never sends at the same time as the shared connection. Nothing else passes `connectVia`.
    poolOf = (id) => {
      const url = via(probeUrl, id);
      if (url === probeUrl) return api;
      let pool = pools.get(id);
      if (!pool) {
        pool = apiPool(url, 1);
        pools.set(id, pool);
      }
      return pool;
    };
  } else {
    catalogPool = apiPool(via(probeUrl, 'catalog'), options.poolSize);
    const base = `${current[0]!.name}_${options.variant}`;
    catalogSchema = options.variant;
    location = (id) => `${base}_shard_${id}`;
    schemaOf = () => 'public';
    poolOf = (id) => {
      let pool = pools.get(id);
      if (!pool) {
        pool = apiPool(via(databaseUrl(svc.url, location(id)), id), options.poolSize, { idleTimeoutMillis: 5000 });
        pools.set(id, pool);
      }
      return pool;
    };
  }

  const catalog: Catalog = { pool: catalogPool, table: (name) => `${q(catalogSchema)}.${q(name)}` };
  const shards = new Map<number, Shard>();
  const get = (id: number): Shard => {
    let shard = shards.get(id);
    if (!shard) {
      const schema = schemaOf(id);
      shard = {
        id,
        location: location(id),
        get pool() {
          return poolOf(id);
        },
        table: (name) => `${q(schema)}.${q(name)}`,
        ops: 0,
      };
      shards.set(id, shard);
    }
    return shard;
  };

  /** Creates the shard's database (server) and its notes table; idempotent. */
  const build = async (id: number) => {
    if (!oneDatabase) await ensureDatabase(svc.url, location(id));
    await createQuietly(get(id).pool, notesDdl(schemaOf(id)));
  };

  const ids = async (inService: boolean, db: pg.Pool = catalog.pool) => {
    const { rows } = await db.query<{ id: number }>(
      `SELECT id FROM ${catalog.table('shards')} ${inService ? 'WHERE in_service' : ''} ORDER BY id`,
    );
    return rows.map((r) => r.id);
  };

  context.onClose(async () => {
    // The API's pools first, so nothing they still send meets the drops below on the embedded engine.
    await Promise.allSettled(apiPools.map((p) => p.end()));
    // The catalog lives in the probe's database (or engine): ask it directly, past any fault.
    const everyShard = await ids(false, probe).catch(() => [...shards.keys()]);
    if (kept) return;
    if (oneDatabase) {
      for (const schema of [...everyShard.map(location), catalogSchema]) {
        await probe.query(`DROP SCHEMA IF EXISTS ${q(schema)} CASCADE`).catch(() => 0);
      }
    } else {
      // At once: whoever closes us may not wait long (a load script's servers get a few seconds).
      await Promise.allSettled(everyShard.map((id) => dropDatabase(svc.url, location(id))));
    }
  });

  await createQuietly(catalog.pool, catalogDdl(catalogSchema));
  const { rows: existing } = await catalog.pool.query(`SELECT 1 FROM ${catalog.table('shards')} LIMIT 1`);
  if (existing.length === 0) {
    for (let id = 0; id < options.initial; id++) {
      await catalog.pool.query(
        `INSERT INTO ${catalog.table('shards')} (id, location, in_service) VALUES ($1, $2, true) ON CONFLICT DO NOTHING`,
        [id, location(id)],
      );
    }
  }
  for (const id of await ids(false)) await build(id);

  return {
    catalog,
    embedded: oneDatabase,
    get,
    list: async () => (await ids(true)).map(get),
    all: async () => (await ids(false)).map(get),
    async provision() {
      // Claim the next id in the catalog first: two instances provisioning at once get different ids.
      for (;;) {
        const { rows } = await catalog.pool.query<{ id: number }>(
          `SELECT coalesce(max(id) + 1, 0) AS id FROM ${catalog.table('shards')}`,
        );
        const id = rows[0]!.id;
        try {
          await catalog.pool.query(`INSERT INTO ${catalog.table('shards')} (id, location) VALUES ($1, $2)`, [
            id,
            location(id),
          ]);
        } catch (error) {
          if ((error as { code?: string }).code === '23505') continue;
          throw error;
        }
        await build(id);
        return get(id);
      }
    },
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
}
