/**
 * Clients configured the way production code should be: short timeouts and no endless retries, so a
 * service that goes away shows up as a fast, clear error instead of a hung request.
 */
import { Redis, type RedisOptions } from 'ioredis';
import { Kafka, type KafkaConfig, logLevel } from 'kafkajs';
import pg from 'pg';
import { SERVICES } from './kinds.ts';

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
 * A kafkajs client for `brokers` ("host:port,host:port" as KAFKA_BROKERS says it, or a list). Quiet
 * unless KAFKAJS_LOG_LEVEL says otherwise (kafkajs reads it itself): it logs the broker's retriable
 * answers (a coordinator still loading) as errors, although it retries them. Retries start at 100 ms
 * instead of 300 ms, so a consumer that keeps failing gives up and restarts in about a second, not ten.
 */
export function createKafkaClient(
  brokers: string | readonly string[],
  config: Omit<KafkaConfig, 'brokers'> = {},
): Kafka {
  const list = typeof brokers === 'string' ? brokers.split(',').map((broker) => broker.trim()) : [...brokers];
  return new Kafka({
    brokers: list,
    logLevel: logLevel.NOTHING,
    retry: { initialRetryTime: 100, retries: 5 },
    ...config,
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
  pool.on('connect', (client) => {
    client.on('error', onConnectionError);
    tagQueryErrors(client);
  });
  tagConnectErrors(pool);
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

/**
 * Which service an error came from, when its own shape cannot say: a refused connection is the same
 * `ECONNREFUSED` from pg, ioredis and amqplib. The pools `createPgPool` makes mark what theirs reject
 * with; a lab marks its own calls with {@link fromService}.
 */
const SOURCE = Symbol.for('@labs/services.source');

/** The services an outage test can name. */
export type OutageSource = 'postgres' | 'redis' | 'rabbitmq' | 'kafka';

/**
 * Marks `error` as coming from `service` (and returns it), so the outage tests name that service and
 * no other: `await publish(job).catch((e) => { throw fromService('rabbitmq', e); })`.
 */
export function fromService<T>(service: OutageSource, error: T): T {
  if (error instanceof Error && !Object.hasOwn(error, SOURCE)) {
    Object.defineProperty(error, SOURCE, { value: service, enumerable: false });
  }
  return error;
}

/**
 * A call to a service given up on at its caller's deadline ({@link withinDeadline}); the call itself may
 * still finish later. It is marked as that service's, whose outage test recognises it.
 */
export class DeadlineError extends Error {
  override readonly name = 'DeadlineError';
}

/**
 * `work`, or a {@link DeadlineError} of `service` after `ms`: for a client whose own bounds are too long
 * for a request (kafkajs waits 30 s for a stalled broker, then retries). Giving up does not cancel: a
 * write given up on may still happen once the service answers, so a 503 for it means "not known to be
 * done", not "not done".
 */
export async function withinDeadline<T>(service: OutageSource, work: Promise<T>, what: string, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    const message = `${what}: ${SERVICES[service].title} did not answer within ${ms} ms`;
    timer = setTimeout(() => reject(fromService(service, new DeadlineError(message))), ms);
  });
  try {
    // Promise.race listens to both, so a late rejection of `work` is handled, not left unhandled.
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** The pool's connect errors (a refused or timed-out connection, pool.query's too) marked as PostgreSQL's. */
function tagConnectErrors(pool: pg.Pool): void {
  const connect = pool.connect.bind(pool) as (callback?: (...args: unknown[]) => void) => unknown;
  pool.connect = ((callback?: (error: Error | undefined, ...rest: unknown[]) => void) => {
    if (callback) return connect((error, ...rest) => callback(fromService('postgres', error as Error), ...rest));
    return (connect() as Promise<pg.PoolClient>).catch((error: unknown) => {
      throw fromService('postgres', error);
    });
  }) as typeof pool.connect;
}

/** A client's query errors (pool.query's and a checked-out client's) marked as PostgreSQL's. */
function tagQueryErrors(client: pg.PoolClient): void {
  const query = client.query as (...args: unknown[]) => unknown;
  client.query = function taggedQuery(this: pg.PoolClient, ...args: unknown[]) {
    const first = args[0] as { submit?: unknown } | undefined;
    if (typeof first?.submit === 'function') return query.apply(this, args); // a cursor or stream: its own events
    const last = args.at(-1);
    if (typeof last === 'function') {
      args[args.length - 1] = (error: Error | undefined, ...rest: unknown[]) =>
        (last as (...a: unknown[]) => void)(fromService('postgres', error), ...rest);
      return query.apply(this, args);
    }
    return (query.apply(this, args) as Promise<unknown>).catch((error: unknown) => {
      throw fromService('postgres', error);
    });
  } as typeof client.query;
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

/**
 * A socket's own error (Node's: it has a `syscall`, connect, read, write), not a client library's.
 * pg hands these on as they are; kafkajs wraps them in errors of its own (which keep the `code`: a
 * code alone must not decide).
 */
const isSocketError = (error: Error) =>
  NETWORK_CODES.has((error as NodeJS.ErrnoException).code ?? '') &&
  typeof (error as NodeJS.ErrnoException).syscall === 'string';

/** What ioredis says when Redis is down, gone or slow (it uses plain Errors, so by name and message). */
const REDIS_OUTAGE =
  /^(Command timed out|Connection is closed\.|Stream isn't writeable and enableOfflineQueue options is false|connect ETIMEDOUT|Socket timeout)/;

/** What pg says when a connection died, or a pool or client timed out. */
const PG_OUTAGE =
  /^(Connection terminated|Client has encountered a connection error|timeout exceeded when trying to connect|Query read timeout)/;

/** What amqplib says when the broker went away, closed the connection, or stopped answering. */
const RABBIT_OUTAGE =
  /^(Connection closed|Channel closed$|Channel ended|Socket closed abruptly|Unexpected close|Heartbeat timeout)/;

/** kafkajs' errors for a broker that cannot be reached, went away, or did not answer in time. */
const KAFKA_OUTAGES = new Set([
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSBrokerNotFound',
  'KafkaJSNoBrokerAvailableError',
  'KafkaJSMetadataNotLoaded',
  'KafkaJSTopicMetadataNotLoaded',
  'KafkaJSGroupCoordinatorNotFound',
  'KafkaJSLockTimeout',
]);

/**
 * The service whose client made `error`, when it says so: a mark ({@link fromService}, the pools of
 * createPgPool), else a shape only one client library makes. Undefined for a bare socket error.
 */
function sourceOf(error: Error): OutageSource | undefined {
  const marked = (error as { [SOURCE]?: OutageSource })[SOURCE];
  if (marked) return marked;
  if (error.name.startsWith('KafkaJS')) return 'kafka';
  if (error.name === 'MaxRetriesPerRequestError' || error.name === 'ReplyError') return 'redis';
  if (error.name === 'IllegalOperationError') return 'rabbitmq';
  // pg's DatabaseError: a SQLSTATE (five characters) and a severity.
  if (
    typeof (error as { severity?: unknown }).severity === 'string' &&
    /^[0-9A-Z]{5}$/.test(String((error as { code?: unknown }).code))
  )
    return 'postgres';
  if (PG_OUTAGE.test(error.message)) return 'postgres';
  if (REDIS_OUTAGE.test(error.message) && !isSocketError(error)) return 'redis';
  if (RABBIT_OUTAGE.test(error.message)) return 'rabbitmq';
  return undefined;
}

/**
 * `error`, or what it wraps (code that wraps an error keeps the original as its cause), is an outage
 * of `service` by `isOwnOutage`; an error that says it came from another service never is.
 */
function outageOf(service: OutageSource, isOwnOutage: (error: Error) => boolean, error: unknown, depth = 0): boolean {
  if (!(error instanceof Error) || depth > 5) return false;
  const source = sourceOf(error);
  if (source !== undefined && source !== service) return false;
  if (isOwnOutage(error) || (error instanceof DeadlineError && source === service)) return true;
  return error.cause !== undefined && error.cause !== error && outageOf(service, isOwnOutage, error.cause, depth + 1);
}

/**
 * True when `error` says Redis could not be reached in time (down, restarting, stalled), as opposed to
 * a mistake in the code or the script (a ReplyError, a TypeError): the first is an outage a service
 * may answer with a fallback or a 503; the second must surface as a bug. An error marked as another
 * service's, or shaped like another client library's (kafkajs keeps `ECONNREFUSED` as its code), is not.
 */
export function isRedisOutage(error: unknown): boolean {
  return outageOf(
    'redis',
    (e) => e.name === 'MaxRetriesPerRequestError' || isSocketError(e) || REDIS_OUTAGE.test(e.message),
    error,
  );
}

/**
 * True when `error` says PostgreSQL could not answer in time: unreachable, shutting down, refusing
 * connections, a connection that died, a pool that could not hand one out, or a statement cancelled
 * by its timeout. Not an error marked as, or shaped like, another service's.
 */
export function isPostgresOutage(error: unknown): boolean {
  return outageOf(
    'postgres',
    (e) => {
      const code = (e as { code?: string }).code ?? '';
      // 57P01-57P03: admin shutdown, crash shutdown, cannot connect now; 57014: statement timeout;
      // 08xxx: connection exceptions; 53300: too many connections.
      if (isSocketError(e) || /^(57P0[1-3]|57014|08\d{3}|53300)$/.test(code)) return true;
      // 55000 is "object not in prerequisite state": an outage only when it is a database refusing
      // connections (ALLOW_CONNECTIONS false, a database being dropped); other 55000s are bugs in the code.
      if (code === '55000' && /not (currently )?accepting connections/.test(e.message)) return true;
      return PG_OUTAGE.test(e.message);
    },
    error,
  );
}

/**
 * True when `error` says RabbitMQ could not be reached or went away (a refused or reset connection, a
 * connection the broker closed, a channel used after it closed, a missed heartbeat), as opposed to a
 * mistake (a queue declared with other arguments, a message to an exchange that does not exist).
 */
export function isRabbitOutage(error: unknown): boolean {
  return outageOf('rabbitmq', (e) => isSocketError(e) || RABBIT_OUTAGE.test(e.message), error);
}

/**
 * kafkajs marks the broker answers a later attempt can get past as retriable: no leader for a partition
 * yet (a topic just made, an election under way), a partition this broker does not host any more. The
 * cluster cannot serve that request now, which is an outage to the caller, not a bug in its code.
 */
const isRetriableKafkaError = (e: Error) =>
  e.name.startsWith('KafkaJS') && (e as { retriable?: unknown }).retriable === true;

/**
 * True when `error` says Kafka could not be reached in time (down, restarting, stalled), as opposed to
 * a mistake in the code (a message too large, a TypeError). kafkajs names its errors, and keeps the
 * error behind "retries exceeded" as its cause, which is looked at too.
 */
export function isKafkaOutage(error: unknown): boolean {
  return outageOf('kafka', (e) => KAFKA_OUTAGES.has(e.name) || isRetriableKafkaError(e), error);
}
