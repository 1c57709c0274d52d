/**
 * A database of its own for `lab serve` and the load script, so the lab never writes into whatever
 * database the resolved server's URL points at. The embedded engine is private to the process already.
 */
import pg from 'pg';
import { resolveService } from '@labs/services';

/** Creates database `name` on the resolved PostgreSQL server if it does not exist; returns its URL. */
export async function ensureDatabase(name: string): Promise<string> {
  const svc = await resolveService('postgres');
  if (svc.provider === 'embedded') return svc.url;
  const admin = new pg.Client({ connectionString: svc.url, connectionTimeoutMillis: 5000 });
  await admin.connect();
  try {
    const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (!rowCount) await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
  } finally {
    await admin.end();
  }
  const url = new URL(svc.url);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drops database `name` (ending any connection left open). A no-op on the embedded engine. */
export async function dropDatabase(name: string): Promise<void> {
  const svc = await resolveService('postgres');
  if (svc.provider === 'embedded') return;
  const admin = new pg.Client({ connectionString: svc.url, connectionTimeoutMillis: 5000 });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}
