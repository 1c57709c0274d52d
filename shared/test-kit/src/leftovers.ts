/**
 * Databases a killed run left behind. A spec, a fixture or a load script drops the database it made
 * when it closes; a process killed first (SIGKILL, a mutation tester's timeout, a closed terminal before
 * the handler ran) never does, and its `labs_<slug>_test_<id>` or `labs_test_<id>` stays on the server
 * for good. The id starts with the creator's pid (the lab kit's `uniqueId`: the pid in base 36, then 8
 * hex digits), so a leftover can be told from a database in use: its creator is gone from this machine
 * and nobody is connected to it. Only a server on this machine is swept: on a server that several
 * machines share, a pid says nothing.
 */
import pg from 'pg';

/** A database made for one run: `labs_[<slug>_]<test|bench>_<pid36><8 hex>[_<suffix>]`. */
const RUN_DATABASE = /^labs_(?:.+_)?(?:test|bench)_([0-9a-z]+)(?:_.*)?$/;

/** The pid in a run database's name, or undefined for any other name. */
export function creatorPid(name: string): number | undefined {
  const id = RUN_DATABASE.exec(name)?.[1];
  if (!id || id.length <= 8 || !/^[0-9a-f]{8}$/.test(id.slice(-8))) return undefined;
  const pid = Number.parseInt(id.slice(0, -8), 36);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** True while a process with this pid exists on this machine (EPERM: it does, as another user). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True for a server on this machine (loopback, or a socket path). */
function onThisMachine(serverUrl: string): boolean {
  const { hostname } = new URL(serverUrl);
  return ['', 'localhost', '127.0.0.1', '[::1]', '::1'].includes(hostname);
}

/**
 * Drops the run databases on the server of `serverUrl` whose creator is gone and that nobody is
 * connected to; resolves with their names. A database someone connects to meanwhile is left (the drop
 * fails, without FORCE), and so is everything on a server of another machine.
 */
export async function dropLeftoverDatabases(serverUrl: string): Promise<string[]> {
  if (!onThisMachine(serverUrl)) return [];
  const admin = new pg.Client({ connectionString: serverUrl, connectionTimeoutMillis: 5000 });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ datname: string }>(
      `SELECT datname FROM pg_database d WHERE datname LIKE 'labs\\_%'
         AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)`,
    );
    const dropped: string[] = [];
    for (const { datname } of rows) {
      const pid = creatorPid(datname);
      if (pid === undefined || alive(pid)) continue;
      try {
        await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(datname)}`);
        dropped.push(datname);
      } catch {
        // Someone connected to it after all: not a leftover.
      }
    }
    return dropped;
  } finally {
    await admin.end();
  }
}
