/**
 * Databases of their own on a shared PostgreSQL server: a test file's, a lab server's, a load script's.
 * One place creates and drops them, with the name escaped, and with the races of two processes creating
 * the same name at once answered instead of reported.
 */
import pg from 'pg';

/** The URL of database `name` on the server of `serverUrl` (same host, port and credentials). */
export function databaseUrl(serverUrl: string, name: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Runs `work` with a short-lived admin connection to the server of `serverUrl`. */
async function withAdmin<T>(serverUrl: string, work: (admin: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: serverUrl, connectionTimeoutMillis: 5000 });
  await admin.connect();
  try {
    return await work(admin);
  } finally {
    await admin.end();
  }
}

/**
 * Creates database `name` if it does not exist and returns its URL. Two processes creating it at once
 * is fine: PostgreSQL answers the loser with 42P04 (exists) or 23505 (the catalog's unique index).
 * Any other failure (a role without CREATEDB) is an error that says what to do: falling back to the
 * server's own database could let a lab drop someone's tables.
 */
export async function ensureDatabase(serverUrl: string, name: string): Promise<string> {
  await withAdmin(serverUrl, async (admin) => {
    const { rowCount } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (rowCount) return;
    try {
      await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === '42P04' || code === '23505') return;
      throw new Error(
        `Cannot create the database "${name}": ${(error as Error).message}. Grant this role CREATEDB, or use ` +
          'the embedded engine (LABS_PROVIDER=postgres:embedded).',
      );
    }
  });
  return databaseUrl(serverUrl, name);
}

/** Drops database `name`, ending any connection still open to it. */
export async function dropDatabase(serverUrl: string, name: string): Promise<void> {
  await withAdmin(serverUrl, (admin) =>
    admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`),
  );
}
