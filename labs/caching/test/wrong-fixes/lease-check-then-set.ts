/**
 * WRONG FIX: the solution's leases, with the fill written as two round trips: GET the lease, and if it
 * still holds this reader's token, SET the value.
 *
 * Every other defect is mended: writes delete the entry and the lease of every neighbouring schema
 * version, one reader per key fills, missing users are remembered, TTLs are jittered, Redis failures
 * fall back to the database. But the lease check and the SET are separate commands, and a write can
 * commit and invalidate between them: the reader saw its lease, the write deleted lease and entry, and
 * the SET then stores the value read before the write, until its TTL. (EXISTS instead of GET has the
 * same gap, and also accepts a lease another reader took after the write.) The check and the SET must
 * run in one Lua script, where nothing can happen between them.
 *
 * @catches a write that lands between the lease check and the fill does not leave the old value cached
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { Lookup, UserCache, UserCacheOptions } from '../../server/cache.ts';
import type { User } from '../../server/users.ts';

const READ_OR_LEASE = `
local value = redis.call('GET', KEYS[1])
if value then return {1, value} end
if redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2], 'NX') then return {2, ''} end
return {0, ''}
`;

type LeasingRedis = Redis & {
  readOrLease(key: string, lease: string, token: string, leaseMs: number): Promise<[number, string]>;
};

const TTL_JITTER = 0.2;
const LEASE_MS = 3000;

export function createUserCache(options: UserCacheOptions): UserCache {
  const { repository, redis, prefix, schemaVersion, ttlMs, onCacheError = () => {} } = options;
  const missingTtlMs = options.missingTtlMs ?? Math.min(ttlMs, 30_000);
  if (!('readOrLease' in redis)) redis.defineCommand('readOrLease', { numberOfKeys: 2, lua: READ_OR_LEASE });
  const client = redis as LeasingRedis;
  const keyOf = (id: number, version = schemaVersion) => `${prefix}user:v${version}:{${id}}`;
  const leaseOf = (key: string) => `${key}:lease`;
  const jittered = (ms: number) => Math.max(1, Math.round(ms * (1 - TTL_JITTER * Math.random())));

  async function fromDatabase(id: number): Promise<Lookup> {
    return { user: await repository.find(id), source: 'database' };
  }

  async function fill(id: number, key: string, lease: string, token: string): Promise<Lookup> {
    let user: User | null;
    try {
      user = await repository.find(id);
    } catch (error) {
      if ((await redis.get(lease).catch(() => null)) === token) await redis.del(lease).catch(() => 0);
      throw error;
    }
    try {
      // The mistake: a check, then a write, in two round trips.
      if ((await redis.get(lease)) === token) {
        await redis.set(key, JSON.stringify(user), 'PX', jittered(user === null ? missingTtlMs : ttlMs));
        await redis.del(lease);
      }
    } catch (error) {
      onCacheError(error as Error);
    }
    return { user, source: 'database' };
  }

  return {
    async get(id) {
      const key = keyOf(id);
      try {
        const cached = await redis.get(key);
        if (cached !== null) return { user: JSON.parse(cached) as User | null, source: 'cache' };
      } catch (error) {
        onCacheError(error as Error);
        return fromDatabase(id);
      }
      const lease = leaseOf(key);
      const token = randomUUID();
      const giveUpAt = performance.now() + 2 * LEASE_MS;
      for (let pollMs = 2; ; pollMs = Math.min(pollMs * 2, 50)) {
        let state: number;
        let value: string;
        try {
          [state, value] = await client.readOrLease(key, lease, token, LEASE_MS);
        } catch (error) {
          onCacheError(error as Error);
          return fromDatabase(id);
        }
        if (state === 1) return { user: JSON.parse(value) as User | null, source: 'cache' };
        if (state === 2) return fill(id, key, lease, token);
        if (performance.now() > giveUpAt) return fromDatabase(id);
        await sleep(pollMs);
      }
    },

    async put(id, input) {
      const saved = await repository.save(id, input);
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
