/**
 * SOLUTION: cache-aside, kept honest. Five changes to the starter, each closing one way a cache lies
 * or hurts:
 *
 * 1. Invalidate on write, after the commit, by deleting. Deleting (not setting the new value) means
 *    two writers that finish in the opposite order to their commits cannot leave the older value
 *    behind: the next read fills from the database, which has the last committed write.
 * 2. Leases close the read/write race of cache-aside. A reader that misses takes a short lease
 *    (SET NX PX) before it reads the database, and fills only while its lease is still there. A write
 *    deletes the entry *and* the lease, so a reader that read the database before the write committed
 *    can no longer store what it read. The check and the fill are one Lua script: nothing runs between.
 * 3. The same lease stops stampedes across instances: only the lease holder reads the database; the
 *    others poll the cache for a moment and get its answer. One database read per key and expiry.
 * 4. Versioned keys: the schema version is part of every key, so a deployment that changes what a
 *    user looks like starts from an empty namespace instead of reading the old shape. During a rolling
 *    deployment old and new instances run side by side, so a write deletes the entries of the versions
 *    on either side of its own too: a new instance's write reaches the old instances, and an old
 *    instance's write reaches the new ones (the key format is the one thing versions must agree on).
 * 5. TTL with jitter (entries filled together expire at different times) and negative caching (a
 *    missing id is remembered briefly, so a flood of requests for it does not reach the database).
 *
 * Redis failures: reads fall back to the database without filling; a write that cannot invalidate
 * still succeeded in the database, so it is reported and the TTL bounds how long the old value lives.
 * The connection the lab hands in (server/lab.ts) has no offline queue and a short command timeout, so
 * a Redis that is down fails a command at once instead of holding the request until it comes back.
 * An entry that does not decode is reported and read as a miss. Database failures are not the cache's
 * to hide: they propagate, and the routes answer them with a 503 (a write invalidates all the same).
 * A production service would put a concurrency limit in front of that fallback so that a Redis outage
 * cannot become a database outage.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { Lookup, UserCache, UserCacheOptions } from '../server/cache.ts';
import type { User } from '../server/users.ts';

/**
 * KEYS[1]: entry, KEYS[2]: its lease. ARGV[1]: token, ARGV[2]: lease ms.
 * Returns {1, value} on a hit, {2, ''} when the caller now holds the lease, {0, ''} when someone else does.
 */
const READ_OR_LEASE = `
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
if redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2], 'NX') then return {2, ''} end
return {0, ''}
`;

/**
 * KEYS[1]: entry, KEYS[2]: its lease. ARGV[1]: token, ARGV[2]: value, ARGV[3]: ttl ms.
 * Stores the value only if the caller's lease survived (no write deleted it meanwhile). Returns 1 if stored.
 */
const FILL_IF_LEASED = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
`;

/** KEYS[1]: a lease. ARGV[1]: token. Deletes the lease if the caller still holds it. */
const RELEASE_LEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

type LeasingRedis = Redis & {
  readOrLease(key: string, lease: string, token: string, leaseMs: number): Promise<[number, string]>;
  fillIfLeased(key: string, lease: string, token: string, value: string, ttlMs: number): Promise<number>;
  releaseLease(lease: string, token: string): Promise<number>;
};

/** Entries live between (1 - TTL_JITTER) × ttl and ttl, so ttl stays the upper bound on staleness. */
export const TTL_JITTER = 0.2;
/** Longer than any sane database read; a lease holder that dies blocks its key for at most this long. */
export const LEASE_MS = 3000;

export function createUserCache(options: UserCacheOptions): UserCache {
  const { repository, redis, prefix, schemaVersion, ttlMs, onCacheError = () => {} } = options;
  const missingTtlMs = options.missingTtlMs ?? Math.min(ttlMs, 30_000);
  const leaseMs = options.leaseMs ?? LEASE_MS;
  // Defined on the connection (again, if another cache shares it: the same scripts).
  redis.defineCommand('readOrLease', { numberOfKeys: 2, lua: READ_OR_LEASE });
  redis.defineCommand('fillIfLeased', { numberOfKeys: 2, lua: FILL_IF_LEASED });
  redis.defineCommand('releaseLease', { numberOfKeys: 1, lua: RELEASE_LEASE });
  const client = redis as LeasingRedis;
  // {id} is a Redis Cluster hash tag: a user's entries and leases of every version share one slot,
  // so the scripts and the multi-key DEL below work on a cluster too.
  const keyOf = (id: number, version = schemaVersion) => `${prefix}user:v${version}:{${id}}`;
  const leaseOf = (key: string) => `${key}:lease`;
  const jittered = (ms: number) => Math.max(1, Math.round(ms * (1 - TTL_JITTER * Math.random())));

  /**
   * A cached value, or undefined when it is not one this code wrote (truncated, written by other code,
   * by hand): reported, and then treated as a miss rather than a 500 for as long as the entry lives.
   */
  function decode(cached: string): User | null | undefined {
    try {
      const value: unknown = JSON.parse(cached);
      // null is a remembered 404; a user has a numeric id (a primitive has no id at all).
      if (value === null || typeof (value as { id?: unknown }).id === 'number') return value as User | null;
    } catch {
      // reported below
    }
    // Stryker disable next-line StringLiteral: the wording of a log line
    // Stryker disable next-line MethodExpression: how much of the entry a log line quotes
    onCacheError(new Error(`Not a cached user: ${JSON.stringify(cached.slice(0, 40))}`));
    return undefined;
  }

  /** Reads the database, bypassing the cache: the fallback when Redis fails or a lease never clears. */
  async function fromDatabase(id: number): Promise<Lookup> {
    // Stryker disable next-line StringLiteral: the routes tell 'cache' from anything else (X-Cache)
    return { user: await repository.find(id), source: 'database' };
  }

  async function get(id: number): Promise<Lookup> {
    const key = keyOf(id);
    try {
      // The common case, a hit, is one plain GET; the script below runs only on a miss.
      const cached = await redis.get(key);
      if (cached !== null) {
        const hit = decode(cached);
        if (hit !== undefined) return { user: hit, source: 'cache' };
        await redis.del(key); // it does not decode: a miss, dropped so that the fill below replaces it
      }
      // Stryker disable next-line BlockStatement: without it the script below fails the same way, reported
    } catch (error) {
      onCacheError(error as Error);
      return fromDatabase(id);
    }
    const lease = leaseOf(key);
    const token = randomUUID();
    // A lease holder's read ends within the pool's bounds (server/lab.ts), well inside the lease. Past
    // that, the key has been through a failed holder and maybe a second one: waiting longer would
    // queue this request behind a third, so it asks the database itself, once.
    const giveUpAt = performance.now() + leaseMs;
    for (let pollMs = 2; ; pollMs = Math.min(pollMs * 2, 50)) {
      let state: number;
      let value: string;
      try {
        // Read again and take the lease if the entry is still missing, in one step.
        [state, value] = await client.readOrLease(key, lease, token, leaseMs);
      } catch (error) {
        onCacheError(error as Error);
        return fromDatabase(id);
      }
      const filled = state === 1 ? decode(value) : undefined;
      if (filled !== undefined) return { user: filled, source: 'cache' };
      if (state === 2) return fillAsLeaseHolder(id, key, lease, token);
      // Another request (on any instance) is reading this user from the database: wait for its fill.
      // Mutation survivor: `>=` is the same moment on a fractional clock; a mark would hide `<=`, killed.
      if (performance.now() > giveUpAt) return fromDatabase(id);
      await sleep(pollMs);
    }
  }

  async function fillAsLeaseHolder(id: number, key: string, lease: string, token: string): Promise<Lookup> {
    let user: User | null;
    try {
      user = await repository.find(id);
    } catch (error) {
      // Hand the lease back at once, so the waiters do not wait out the lease for a read that failed.
      await client.releaseLease(lease, token).catch(() => undefined);
      throw error;
    }
    const ttl = jittered(user === null ? missingTtlMs : ttlMs);
    try {
      // If a write deleted our lease meanwhile, what we read may be older than that write: not stored.
      await client.fillIfLeased(key, lease, token, JSON.stringify(user), ttl);
    } catch (error) {
      onCacheError(error as Error);
    }
    // Stryker disable next-line StringLiteral: the routes tell 'cache' from anything else (X-Cache)
    return { user, source: 'database' };
  }

  /** Deletes this version's entry and the neighbours' (previous and next deployment), each with its lease. */
  async function invalidate(id: number): Promise<void> {
    const versions = [schemaVersion - 1, schemaVersion, schemaVersion + 1];
    const keys = versions.map((version) => keyOf(id, version)).flatMap((key) => [key, leaseOf(key)]);
    try {
      await redis.del(...keys);
    } catch (error) {
      onCacheError(error as Error);
    }
  }

  return {
    get,

    async put(id, input) {
      try {
        return await repository.save(id, input); // committed when this resolves
      } finally {
        // Also when the save failed: a connection cut after the commit loses only the reply, and the
        // row may be new. A needless DEL costs one miss; a skipped one serves the old row for a TTL.
        await invalidate(id);
      }
    },
  };
}
