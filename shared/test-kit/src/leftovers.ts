/**
 * What a killed run left behind. A spec, a fixture or a load script drops the database it made and
 * deletes the Redis keys under its prefix when it closes; a process killed first (SIGKILL, a mutation
 * tester's timeout, a closed terminal before the handler ran) never does, and its `labs_<slug>_test_<id>`
 * or `labs_test_<id>` stays on the server for good, its `labs:<slug>:test:<id>:` keys until they expire
 * (a room's history: a day). The id starts with the creator's pid (the lab kit's `uniqueId`: the pid in
 * base 36, then 8 hex digits), so a leftover can be told from one in use: its creator is gone from this
 * machine (and, for a database, nobody is connected to it). Only a server on this machine is swept: on a
 * server that several machines share, a pid says nothing.
 */
import { createRedisClient, processAlive } from '@labs/services';
import pg from 'pg';

/** A database made for one run: `labs_[<slug>_]<test|bench>_<pid36><8 hex>[_<suffix>]`. */
const RUN_DATABASE = /^labs_(?:.+_)?(?:test|bench)_([0-9a-z]+)(?:_.*)?$/;

/** A run's Redis key prefix: `labs:test:<id>:` (a fixture's) or `labs:<slug>:<test|bench>:<id>:`. */
const RUN_PREFIX = /^(labs:(?:test|[^:]+:(?:test|bench)):([0-9a-z]+):)/;

/** The pid in a run database's name, or undefined for any other name. */
export function creatorPid(name: string): number | undefined {
  return pidOf(RUN_DATABASE.exec(name)?.[1]);
}

/** The pid a `uniqueId` starts with, or undefined when `id` is not one. */
function pidOf(id: string | undefined): number | undefined {
  if (!id || id.length <= 8 || !/^[0-9a-f]{8}$/.test(id.slice(-8))) return undefined;
  const pid = Number.parseInt(id.slice(0, -8), 36);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
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
      if (pid === undefined || processAlive(pid)) continue;
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

/**
 * Deletes the keys under run prefixes on the Redis of `url` whose creator is gone from this machine;
 * resolves with the prefixes swept. Keys of a live run, of `lab serve` (`labs:<slug>:serve:`) and of
 * anything else are left, and so is everything on a server of another machine.
 */
export async function deleteLeftoverKeys(url: string): Promise<string[]> {
  if (!onThisMachine(url)) return [];
  const redis = createRedisClient(url);
  try {
    const gone = new Map<string, boolean>();
    const swept = new Set<string>();
    for await (const keys of redis.scanStream({ match: 'labs:*', count: 500 }) as AsyncIterable<string[]>) {
      const leftovers = keys.filter((key) => {
        const [, prefix, id] = RUN_PREFIX.exec(key) ?? [];
        const pid = pidOf(id);
        if (!prefix || pid === undefined) return false;
        if (!gone.has(prefix)) gone.set(prefix, !processAlive(pid));
        if (gone.get(prefix)) swept.add(prefix);
        return gone.get(prefix);
      });
      if (leftovers.length > 0) await redis.unlink(...leftovers);
    }
    return [...swept];
  } finally {
    redis.disconnect();
  }
}
