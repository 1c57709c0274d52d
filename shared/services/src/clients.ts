/**
 * Clients configured the way production code should be: short timeouts and no endless retries, so a
 * service that goes away shows up as a fast, clear error instead of a hung request.
 */
import { Redis, type RedisOptions } from 'ioredis';
import pg from 'pg';

/** An ioredis client that fails a command after `commandTimeout` ms instead of queueing it forever. */
export function createRedisClient(url: string, options: RedisOptions = {}): Redis {
  return new Redis(url, {
    connectTimeout: 2000,
    commandTimeout: 1000,
    maxRetriesPerRequest: 1,
    // Reconnect with a capped back-off; never give up, the server may come back.
    retryStrategy: (times) => Math.min(times * 100, 2000),
    lazyConnect: false,
    ...options,
  });
}

/**
 * A pg pool with a connection timeout, so an unreachable database fails in seconds.
 *
 * A connection that dies (a restart, a reset, a test's `DROP DATABASE ... WITH (FORCE)`) is an 'error'
 * event on its pg client, and an 'error' event nobody listens to kills the process. The pool listens
 * only while a client sits idle in it; once checked out (`pool.connect()`, a transaction from BEGIN to
 * COMMIT) the client is on its own. So every client gets a listener of ours when the pool opens it,
 * for its whole life: the failure still reaches the code through the query that fails (or the next
 * one: "not queryable"), and `onConnectionError` hears about it, for a log line.
 */
export function createPgPool(
  connectionString: string,
  options: pg.PoolConfig = {},
  onConnectionError: (error: Error) => void = () => {},
): pg.Pool {
  const pool = new pg.Pool({ connectionString, connectionTimeoutMillis: 5000, max: 10, ...options });
  pool.on('connect', (client) => client.on('error', onConnectionError));
  // An idle client's error is emitted on the pool too (after it discarded the client); the client's own
  // listener above has reported it already.
  pool.on('error', () => {});
  return pool;
}

/** Deletes every key that starts with `prefix`, with SCAN so a large keyspace never blocks Redis. */
export async function deleteByPrefix(client: Redis, prefix: string): Promise<number> {
  let deleted = 0;
  for await (const keys of client.scanStream({ match: `${prefix}*`, count: 500 }) as AsyncIterable<string[]>) {
    if (keys.length > 0) deleted += await client.unlink(...keys);
  }
  return deleted;
}

/** Socket-level failures: the service is unreachable, went away, or is not answering. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/** What ioredis says when Redis is down, gone or slow (it uses plain Errors, so by name and message). */
const REDIS_OUTAGE =
  /^(Command timed out|Connection is closed\.|Stream isn't writeable and enableOfflineQueue options is false|connect ETIMEDOUT|Socket timeout)/;

/**
 * True when `error` says Redis could not be reached in time (down, restarting, stalled), as opposed to
 * a mistake in the code or the script (a ReplyError, a TypeError): the first is an outage a service
 * may answer with a fallback or a 503; the second must surface as a bug.
 */
export function isRedisOutage(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.name === 'MaxRetriesPerRequestError') return true;
  if (NETWORK_CODES.has((error as NodeJS.ErrnoException).code ?? '')) return true;
  // Code that wraps an error keeps the original as its cause.
  return REDIS_OUTAGE.test(error.message) || (error.cause !== undefined && isRedisOutage(error.cause));
}

/**
 * True when `error` says PostgreSQL could not answer in time: unreachable, shutting down, a
 * connection that died, a pool that could not hand one out, or a statement cancelled by its timeout.
 */
export function isPostgresOutage(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: string }).code ?? '';
  // 57P01-57P03: admin shutdown, crash shutdown, cannot connect now; 57014: statement timeout;
  // 08xxx: connection exceptions; 53300: too many connections.
  if (NETWORK_CODES.has(code) || /^(57P0[1-3]|57014|08\d{3}|53300)$/.test(code)) return true;
  // 55000 is "object not in prerequisite state": an outage only when it is a database refusing
  // connections (ALLOW_CONNECTIONS false, a database being dropped); other 55000s are bugs in the code.
  if (code === '55000' && /not (currently )?accepting connections/.test(error.message)) return true;
  // pg's own words: a connection that died (mid-query, or before this query on a checked-out client)
  // and a pool or client timeout.
  if (
    /^(Connection terminated|Client has encountered a connection error|timeout exceeded when trying to connect|Query read timeout)/.test(
      error.message,
    )
  )
    return true;
  return error.cause !== undefined && isPostgresOutage(error.cause);
}
