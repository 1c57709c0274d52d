/**
 * WRONG FIX: stampedes stopped with an in-process single-flight (concurrent reads of one user on this
 * instance share one lookup), and the solution's lease kept only to refuse a fill that a write overtook.
 *
 * Writes delete the entries and leases of every neighbouring schema version, a fill checks its lease
 * and stores in one script, missing users are remembered, TTLs are jittered, Redis failures fall back
 * to the database. And on one instance a cold key costs one database read. But every instance has its
 * own map of lookups in flight: with ten instances behind a load balancer, a popular key that expires
 * sends ten reads to the database at once, and a cold start after a deployment multiplies every key's
 * reads by the number of instances. The one loader per key must be chosen where every instance sees
 * it: in Redis (the lease taken with NX, the others waiting for its fill).
 *
 * @catches 200 concurrent reads of a cold key, over two instances, cause one database read
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Lookup, UserCache, UserCacheOptions } from '../../server/cache.ts';
import type { User } from '../../server/users.ts';

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
  fillIfLeased(key: string, lease: string, token: string, value: string, ttlMs: number): Promise<number>;
  releaseLease(lease: string, token: string): Promise<number>;
};

const TTL_JITTER = 0.2;
const LEASE_MS = 3000;

/** The lookups in flight on this instance, by user id. The mistake: no other instance sees them. */
type InFlight = Map<number, Promise<Lookup>>;

export function createUserCache(options: UserCacheOptions): UserCache {
  const { repository, redis, prefix, schemaVersion, ttlMs, onCacheError = () => {} } = options;
  const missingTtlMs = options.missingTtlMs ?? Math.min(ttlMs, 30_000);
  if (!('fillIfLeased' in redis)) {
    redis.defineCommand('fillIfLeased', { numberOfKeys: 2, lua: FILL_IF_LEASED });
    redis.defineCommand('releaseLease', { numberOfKeys: 1, lua: RELEASE_LEASE });
  }
  const client = redis as LeasingRedis;
  const inFlight: InFlight = new Map();
  // {id} is a Redis Cluster hash tag: a user's entries and leases of every version share one slot,
  // so the scripts and the multi-key DEL below work on a cluster too.
  const keyOf = (id: number, version = schemaVersion) => `${prefix}user:v${version}:{${id}}`;
  const leaseOf = (key: string) => `${key}:lease`;
  const jittered = (ms: number) => Math.max(1, Math.round(ms * (1 - TTL_JITTER * Math.random())));

  /** Reads the database, bypassing the cache: the fallback when Redis fails or a lease never clears. */
  async function fromDatabase(id: number): Promise<Lookup> {
    return { user: await repository.find(id), source: 'database' };
  }

  function get(id: number): Promise<Lookup> {
    const pending = inFlight.get(id);
    if (pending) return pending;
    const lookup = lookupOnce(id).finally(() => inFlight.delete(id));
    inFlight.set(id, lookup);
    return lookup;
  }

  async function lookupOnce(id: number): Promise<Lookup> {
    const key = keyOf(id);
    try {
      const cached = await redis.get(key);
      if (cached !== null) return { user: JSON.parse(cached) as User | null, source: 'cache' };
    } catch (error) {
      onCacheError(error as Error);
      return fromDatabase(id);
    }
    // This instance's load takes the lease, so that a write during the database read is noticed.
    const lease = leaseOf(key);
    const token = randomUUID();
    try {
      await redis.set(lease, token, 'PX', LEASE_MS);
    } catch (error) {
      onCacheError(error as Error);
      return fromDatabase(id);
    }
    return fillAsLeaseHolder(id, key, lease, token);
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
    } catch (error) {
      onCacheError(error as Error);
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
      } catch (error) {
        onCacheError(error as Error);
      }
      return saved;
    },
  };
}
