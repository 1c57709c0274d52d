/**
 * WRONG FIX: the solution, except that Redis failures are caught and forgotten (`catch {}`).
 *
 * Reads and writes still work while Redis is down, answered from the database, so the outage looks
 * handled. But nobody learns of it: no log line, no metric, while every read now reaches the database
 * (and a write's failed invalidation leaves an old value cached until its TTL). A fallback that hides
 * the failure turns a cache outage into a database overload nobody can explain; report each failure
 * (options.onCacheError) and answer from the database.
 *
 * @catches with Redis down, reads and writes are answered from the database and the failures reported
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { Lookup, UserCache, UserCacheOptions } from '../../server/cache.ts';
import type { User } from '../../server/users.ts';

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

const TTL_JITTER = 0.2;
const LEASE_MS = 3000;

export function createUserCache(options: UserCacheOptions): UserCache {
  const { repository, redis, prefix, schemaVersion, ttlMs } = options;
  const missingTtlMs = options.missingTtlMs ?? Math.min(ttlMs, 30_000);
  if (!('readOrLease' in redis)) {
    redis.defineCommand('readOrLease', { numberOfKeys: 2, lua: READ_OR_LEASE });
    redis.defineCommand('fillIfLeased', { numberOfKeys: 2, lua: FILL_IF_LEASED });
    redis.defineCommand('releaseLease', { numberOfKeys: 1, lua: RELEASE_LEASE });
  }
  const client = redis as LeasingRedis;
  // {id} is a Redis Cluster hash tag: a user's entries and leases of every version share one slot,
  // so the scripts and the multi-key DEL below work on a cluster too.
  const keyOf = (id: number, version = schemaVersion) => `${prefix}user:v${version}:{${id}}`;
  const leaseOf = (key: string) => `${key}:lease`;
  const jittered = (ms: number) => Math.max(1, Math.round(ms * (1 - TTL_JITTER * Math.random())));

  /** Reads the database, bypassing the cache: the fallback when Redis fails or a lease never clears. */
  async function fromDatabase(id: number): Promise<Lookup> {
    return { user: await repository.find(id), source: 'database' };
  }

  async function get(id: number): Promise<Lookup> {
    const key = keyOf(id);
    try {
      // The common case, a hit, is one plain GET; the script below runs only on a miss.
      const cached = await redis.get(key);
      if (cached !== null) return { user: JSON.parse(cached) as User | null, source: 'cache' };
    } catch {
      // The mistake: nobody is told.
      return fromDatabase(id);
    }
    const lease = leaseOf(key);
    const token = randomUUID();
    const giveUpAt = performance.now() + 2 * LEASE_MS;
    for (let pollMs = 2; ; pollMs = Math.min(pollMs * 2, 50)) {
      let state: number;
      let value: string;
      try {
        // Read again and take the lease if the entry is still missing, in one step.
        [state, value] = await client.readOrLease(key, lease, token, LEASE_MS);
      } catch {
        // The mistake: nobody is told.
        return fromDatabase(id);
      }
      if (state === 1) return { user: JSON.parse(value) as User | null, source: 'cache' };
      if (state === 2) return fillAsLeaseHolder(id, key, lease, token);
      // Another request (on any instance) is reading this user from the database: wait for its fill.
      if (performance.now() > giveUpAt) return fromDatabase(id);
      await sleep(pollMs);
    }
  }

  async function fillAsLeaseHolder(id: number, key: string, lease: string, token: string): Promise<Lookup> {
    let user: User | null;
    try {
      user = await repository.find(id);
    } catch (error) {
      // Hand the lease back at once, so the waiters do not wait LEASE_MS for a read that failed.
      await client.releaseLease(lease, token).catch(() => undefined);
      throw error;
    }
    const ttl = jittered(user === null ? missingTtlMs : ttlMs);
    try {
      // If a write deleted our lease meanwhile, what we read may be older than that write: not stored.
      await client.fillIfLeased(key, lease, token, JSON.stringify(user), ttl);
    } catch {
      // The mistake: nobody is told.
    }
    return { user, source: 'database' };
  }

  return {
    get,

    async put(id, input) {
      const saved = await repository.save(id, input); // committed when this resolves
      // This version's entry and the neighbours' (previous and next deployment), each with its lease.
      const versions = [schemaVersion - 1, schemaVersion, schemaVersion + 1];
      const keys = versions.map((version) => keyOf(id, version)).flatMap((key) => [key, leaseOf(key)]);
      try {
        await redis.del(...keys);
      } catch {
        // The mistake: nobody is told.
      }
      return saved;
    },
  };
}
