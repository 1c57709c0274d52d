/**
 * Counts the SQL statements an app sends through a real `pg` Pool, so a spec can assert "2 queries per
 * request" instead of timing anything. The code under test needs no hooks: the counter instruments the
 * pool from outside.
 *
 *   const queries = countQueries(pool);
 *   queries.reset();
 *   await fetch(`${server.url}/api/authors?limit=10`);
 *   expect(queries.count).toBe(2);
 */
import type pg from 'pg';

/** A live count of the statements sent through one pool. */
export interface QueryCounter extends Disposable {
  /** Statements sent since the counter was made or last reset. */
  readonly count: number;
  /** Their SQL text, oldest first (a prepared statement's text, or its name when only that is known). */
  readonly queries: readonly string[];
  /** Starts counting from zero again. */
  reset(): void;
  /** Stops counting (the instrumentation stays in place but does nothing). Also `using` disposes. */
  stop(): void;
}

type QueryFn = pg.PoolClient['query'];

/** The SQL text of the first argument of `query()`, whichever form it took. */
function sqlText(arg: unknown): string {
  if (typeof arg === 'string') return arg;
  if (arg && typeof arg === 'object') {
    const config = arg as { text?: unknown; name?: unknown };
    if (typeof config.text === 'string') return config.text;
    if (typeof config.name === 'string') return `(prepared statement ${config.name})`;
  }
  return String(arg);
}

/**
 * Instruments `pool` and returns a counter of the statements sent through it from now on.
 *
 * Every statement runs on a client checked out of the pool, whether the app calls `pool.query()` or
 * `pool.connect()` then `client.query()`; the pool emits 'acquire' for each checkout, new or idle, and
 * the counter wraps that client's `query` once. So each statement counts exactly once, whatever path
 * sent it, including transactions' BEGIN and COMMIT. Statements a 'connect' listener sends while a new
 * client is being set up, before its first checkout, are not counted.
 *
 * Several counters may watch one pool; each counts independently.
 *
 * What it counts is calls to `query()`, which is what an app sends as statements in practice. Two things
 * it cannot see: a string holding several statements (`'SELECT 1; SELECT 2'`, simple protocol) counts
 * once, and a pool or client the code under test creates for itself is not this pool. Where that matters,
 * PostgreSQL's own pg_stat_statements counts on the server side.
 */
export function countQueries(pool: pg.Pool): QueryCounter {
  const seen: string[] = [];
  let active = true;
  const wrapped = new WeakSet<pg.PoolClient>();

  const onAcquire = (client: pg.PoolClient) => {
    if (wrapped.has(client)) return;
    wrapped.add(client);
    const original: QueryFn = client.query;
    // One wrapper per client and counter; it forwards every overload of query() unchanged.
    client.query = function countedQuery(this: pg.PoolClient, ...args: unknown[]) {
      if (active) seen.push(sqlText(args[0]));
      return (original as (...a: unknown[]) => unknown).apply(this, args);
    } as QueryFn;
  };
  pool.on('acquire', onAcquire);

  const stop = () => {
    active = false;
    pool.off('acquire', onAcquire);
  };
  return {
    get count() {
      return seen.length;
    },
    get queries() {
      return [...seen];
    },
    reset() {
      seen.length = 0;
    },
    stop,
    [Symbol.dispose]: stop,
  };
}
