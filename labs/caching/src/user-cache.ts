/**
 * STARTER: cache-aside with a TTL, the version most people write first.
 *
 * Reads look in Redis, fall back to PostgreSQL on a miss and keep the answer for `ttlMs`. Writes go
 * to PostgreSQL. It is fast and it is correct while nothing changes. Then something does:
 * - a user is updated, and every instance keeps serving the old value until the TTL runs out;
 * - a deployment changes what a cached user looks like, and the new code reads the old entries;
 * - a popular user's entry expires, and every request in flight goes to the database at once;
 * - a missing id is looked up in the database on every request, however often it is asked for;
 * - Redis goes down, and every read fails with it, although the database is fine.
 */
import type { Lookup, UserCache, UserCacheOptions } from '../server/cache.ts';
import type { User } from '../server/users.ts';

export function createUserCache(options: UserCacheOptions): UserCache {
  const { repository, redis, prefix, ttlMs } = options;
  // TODO(lab): this key is the same before and after a deployment that changes what a user looks like.
  const keyOf = (id: number) => `${prefix}user:${id}`;

  return {
    async get(id: number): Promise<Lookup> {
      // TODO(lab): when Redis is down this throws, and the request fails although the database could answer.
      const cached = await redis.get(keyOf(id));
      if (cached !== null) return { user: JSON.parse(cached) as User, source: 'cache' };

      // TODO(lab): when a popular entry is missing, every concurrent request runs this query.
      const user = await repository.find(id);
      // TODO(lab): a missing user is not remembered, so each request for it reaches the database.
      if (user !== null) {
        // TODO(lab): entries filled together expire together (and a fill can race with a write).
        await redis.set(keyOf(id), JSON.stringify(user), 'PX', ttlMs);
      }
      return { user, source: 'database' };
    },

    async put(id, input) {
      // TODO(lab): the cached copy of this user is still there, and still served, until its TTL runs out.
      return repository.save(id, input);
    },
  };
}
