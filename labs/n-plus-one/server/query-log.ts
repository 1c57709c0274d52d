/**
 * What `lab serve` prints per API request: the method, URL, status and how many SQL statements the
 * pool sent while it ran; the number the spec asserts, counted by the same counter (the lab kit's).
 */
import type { RequestListener } from 'node:http';
import { countQueries } from '@labs/lab-kit';
import type pg from 'pg';

/**
 * `app`, logging each /api/ request with the statements sent through `db` meanwhile. Requests that
 * overlap share the count, so under load it is approximate; one curl at a time is exact.
 */
export function logQueriesPerRequest(db: pg.Pool, app: RequestListener): RequestListener {
  const queries = countQueries(db);
  return (req, res) => {
    if (req.url?.startsWith('/api/')) {
      const before = queries.count;
      res.once('finish', () => {
        const n = queries.count - before;
        console.log(`${req.method} ${req.url} -> ${res.statusCode}, ${n} SQL ${n === 1 ? 'query' : 'queries'}`);
      });
    }
    app(req, res);
  };
}
