/**
 * The contract every user cache in this lab implements: the starter, the solution, and the
 * pass-through "no cache" of the load script. The routes only ever talk to this.
 */
import type { Redis } from 'ioredis';
import type { UserRepository } from './user-repository.ts';
import type { User, UserInput } from './users.ts';

/** A read's answer, and where it came from (sent as the X-Cache header, counted by the load script). */
export interface Lookup {
  /** null: there is no user with this id. */
  user: User | null;
  source: 'cache' | 'database';
}

/** Reads users through a cache and writes them to the database. */
export interface UserCache {
  get(id: number): Promise<Lookup>;
  /**
   * Resolves once the write is committed and the cache will no longer serve the previous value (unless
   * Redis failed to invalidate: the write still stands, and a cache that survives it reports the failure).
   */
  put(id: number, input: UserInput): Promise<{ user: User; created: boolean }>;
}

/** What a cache is built from. One app instance builds one; instances share Redis and PostgreSQL. */
export interface UserCacheOptions {
  /** The database, in front of which the cache sits. */
  repository: UserRepository;
  /** Shared Redis connection (every app instance has its own connection to the same server). */
  redis: Redis;
  /** Prefix for every Redis key, so tests and apps never collide. */
  prefix: string;
  /**
   * The schema version this deployment presents users in (see users.ts). Instances of one
   * deployment agree on it; a deployment that changes the shape of a user bumps it.
   */
  schemaVersion: number;
  /** How long an entry may live in the cache, at most. */
  ttlMs: number;
  /**
   * How long "there is no such user" may be remembered (for caches that remember it). Default: the
   * cache's own choice, at most `ttlMs` and at most 30 s, so a user created by something other than
   * this cache's writes (a sign-up service, an import) is found within 30 s.
   */
  missingTtlMs?: number;
  /**
   * How long a reader that missed may hold a user's fill lease (for caches that take one): a holder
   * that dies blocks that user this long. Default: the cache's own choice, longer than any sane
   * database read. A test that holds a database read on purpose lengthens it, so that a busy machine
   * cannot stretch the hold past the lease.
   */
  leaseMs?: number;
  /** Called when Redis fails; a cache that survives it answers from the database instead. */
  onCacheError?: (error: Error) => void;
}
