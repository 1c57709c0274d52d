/**
 * What a request costs PostgreSQL, measured from outside the code under test: the statements the
 * server ran and the rows it sent back, through one real `pg` Pool. A spec asserts them ("2 statements
 * per page", never a time), `lab serve` logs them per request, a load script divides them by the
 * requests it sent.
 *
 * Statements, not calls: one call to `query()` can carry many statements. `query('SELECT ...; SELECT ...; SELECT ...')` (the simple protocol allows it when
 * there are no parameters) saves the round trips, but the server still parses, plans and executes N
 * statements: the N+1 is back, hidden in one string. PostgreSQL answers such a string with one result
 * per statement, and pg hands them back as an array, so counting results counts what the server
 * executed. That needs no SQL parsing: splitting the text on `;` goes wrong as soon as a `;` sits in a
 * string literal, a comment or a function body.
 *
 * Rows, because the count alone can be met by reading too much: "every post, then filter in
 * JavaScript" is 2 statements whose second one returns the whole table. The rows the server sent are
 * in the same results. They are rows returned, not rows read inside the server (a window function
 * may rank 2,000 rows to return 300): what the server reads is the plan's business, which the spec
 * checks with EXPLAIN.
 *
 * How: the pool emits 'acquire' for every client it hands out, whether the app calls `pool.query()` or
 * `pool.connect()` then `client.query()`; the meter wraps that client's `query` once. A call counts as
 * one statement when it is sent (so a statement that fails or is still running counts), and as k when
 * its answer holds k results. Not seen: rows streamed through a cursor or a query stream (a
 * Submittable; nothing in this lab uses one), and pools or clients the code under test makes itself.
 */
import type pg from 'pg';

/** One call to `query()`, as sent, and what came back. */
export interface SentSql {
  /** The SQL text (or, for a prepared statement known only by name, that name). */
  readonly text: string;
  /** Its parameters, if any. */
  readonly values: readonly unknown[] | undefined;
  /** Statements the server executed for it: 1 until its answer arrives, then one per result. */
  readonly statements: number;
  /** Rows the server sent back for it, over all its results. */
  readonly rows: number;
}

/** A live measure of the SQL sent through one pool. */
export interface SqlMeter extends Disposable {
  /** Statements executed since the meter was made or last reset. */
  readonly statements: number;
  /** Rows returned since then. */
  readonly rows: number;
  /** Every call since then, oldest first (kept only with `keepSent`). */
  readonly sent: readonly SentSql[];
  /** Starts again from zero. */
  reset(): void;
  /** Stops measuring (the wrapper stays in place but does nothing). Also `using` disposes. */
  stop(): void;
}

type QueryFn = pg.PoolClient['query'];
type Callback = (error: Error | null, result: unknown) => unknown;

/** The SQL text of `query()`'s first argument, whichever form it took. */
function sqlText(arg: unknown): string {
  if (typeof arg === 'string') return arg;
  if (arg && typeof arg === 'object') {
    const config = arg as { text?: unknown; name?: unknown };
    if (typeof config.text === 'string') return config.text;
    if (typeof config.name === 'string') return `(prepared statement ${config.name})`;
  }
  return String(arg);
}

/** The parameters of a `query(text, values)` or `query({ text, values })` call. */
function sqlValues(args: unknown[]): readonly unknown[] | undefined {
  if (Array.isArray(args[1])) return args[1];
  const config = args[0] as { values?: unknown } | undefined;
  return config && typeof config === 'object' && Array.isArray(config.values) ? config.values : undefined;
}

/** Rows in one result, or in each of a multi-statement answer's results. */
function rowsIn(result: unknown): number {
  const rows = (result as { rows?: unknown } | undefined)?.rows;
  return Array.isArray(rows) ? rows.length : 0;
}

/** How to meter. */
export interface SqlMeterOptions {
  /** Keep every call in `sent` (the spec reads them); default false, so a long run keeps only totals. */
  keepSent?: boolean;
}

/** Instruments `pool` and returns a meter of the SQL sent through it from now on. */
export function meterSql(pool: pg.Pool, options: SqlMeterOptions = {}): SqlMeter {
  let sent: SentSql[] = [];
  let statements = 0;
  let rows = 0;
  // A call answered after a reset belongs to the period before it, and is left out of the new one.
  let period = 0;
  let active = true;
  const wrapped = new WeakSet<pg.PoolClient>();

  const onAcquire = (client: pg.PoolClient) => {
    if (wrapped.has(client)) return;
    wrapped.add(client);
    const original = client.query as (...args: unknown[]) => unknown;
    client.query = function meteredQuery(this: pg.PoolClient, ...args: unknown[]) {
      if (!active) return original.apply(this, args);
      const entry = { text: sqlText(args[0]), values: sqlValues(args), statements: 1, rows: 0 };
      const sentIn = period;
      statements += 1;
      if (options.keepSent) sent.push(entry);
      const answered = (result: unknown) => {
        const results = Array.isArray(result) ? result : [result];
        entry.statements = Math.max(results.length, 1);
        entry.rows = results.reduce((sum: number, r) => sum + rowsIn(r), 0);
        if (sentIn !== period) return;
        statements += entry.statements - 1;
        rows += entry.rows;
      };
      // pg-pool's own query() calls the client with a callback; an app's await gets a promise.
      const last = args.length - 1;
      if (typeof args[last] === 'function') {
        const callback = args[last] as Callback;
        args[last] = function meteredCallback(this: unknown, error: Error | null, result: unknown) {
          if (!error) answered(result);
          return callback.call(this, error, result);
        };
      }
      const returned = original.apply(this, args);
      if (returned && typeof (returned as Promise<unknown>).then === 'function') {
        (returned as Promise<unknown>).then(answered, () => undefined);
      }
      return returned;
    } as QueryFn;
  };
  pool.on('acquire', onAcquire);

  const stop = () => {
    active = false;
    pool.off('acquire', onAcquire);
  };
  return {
    get statements() {
      return statements;
    },
    get rows() {
      return rows;
    },
    get sent() {
      return sent.map((s) => ({ ...s }));
    },
    reset() {
      period += 1;
      sent = [];
      statements = 0;
      rows = 0;
    },
    stop,
    [Symbol.dispose]: stop,
  };
}
