/**
 * What `lab serve` prints per API request: the method, URL, status, how many SQL statements PostgreSQL
 * ran while it was served and how many rows it sent back: the two numbers the spec asserts, measured
 * the same way (the lab kit's meterSql).
 */
import type { RequestListener } from 'node:http';
import type pg from 'pg';
import { meterSql } from '@labs/lab-kit';

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

/**
 * `app`, logging each /api/ request with the statements and rows that went through `db` meanwhile.
 * Requests that overlap share the figures, so under load they are approximate; one curl at a time is exact.
 */
export function logQueriesPerRequest(db: pg.Pool, app: RequestListener): RequestListener {
  const sql = meterSql(db);
  return (req, res) => {
    if (req.url?.startsWith('/api/')) {
      const [statementsBefore, rowsBefore] = [sql.statements, sql.rows];
      res.once('finish', () => {
        const [statements, rows] = [sql.statements - statementsBefore, sql.rows - rowsBefore];
        console.log(
          `${req.method} ${req.url} -> ${res.statusCode}, ${plural(statements, 'SQL statement', 'SQL statements')}, ${plural(rows, 'row', 'rows')}`,
        );
      });
    }
    app(req, res);
  };
}
