/**
 * What `lab serve` prints per API request: the method, URL, status and how many SQL statements the
 * pool sent while it ran; the number the spec asserts, seen from the outside. (The spec counts with
 * the test kit's countQueries, a dev tool; this is the few lines of it that serving needs.)
 */
import type { RequestListener } from 'node:http';
import type pg from 'pg';

/**
 * `app`, logging each /api/ request with the statements sent through `db` meanwhile. Every statement
 * runs on a client checked out of the pool, so wrapping each client's `query` once, at its first
 * checkout, sees them all. Requests that overlap share the count, so under load it is approximate;
 * one curl at a time is exact.
 */
export function logQueriesPerRequest(db: pg.Pool, app: RequestListener): RequestListener {
  let sent = 0;
  const counted = new WeakSet<pg.PoolClient>();
  db.on('acquire', (client) => {
    if (counted.has(client)) return;
    counted.add(client);
    const query = client.query;
    client.query = function countedQuery(this: pg.PoolClient, ...args: unknown[]) {
      sent += 1;
      return (query as (...a: unknown[]) => unknown).apply(this, args);
    } as pg.PoolClient['query'];
  });
  return (req, res) => {
    if (req.url?.startsWith('/api/')) {
      const before = sent;
      res.once('finish', () => {
        const n = sent - before;
        console.log(`${req.method} ${req.url} -> ${res.statusCode}, ${n} SQL ${n === 1 ? 'query' : 'queries'}`);
      });
    }
    app(req, res);
  };
}
