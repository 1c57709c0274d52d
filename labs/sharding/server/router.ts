/**
 * What a shard router is: the one object that knows where a tenant's notes live. The HTTP layer
 * (`app.ts`) calls nothing else for data; the learner's file (`src/shard-router.ts`) implements it.
 */
import type { ShardSet } from './shards.ts';

/** A note, as stored and as the API returns it. */
export interface Note {
  id: string;
  tenant: string;
  body: string;
  /** UTC, microseconds, fixed width: `2026-01-31T09:15:02.123456Z`. Notes written in one batch share it. */
  createdAt: string;
  updatedAt: string;
  /** The placement unit the router recorded when it wrote the note (a bucket router's bucket), and the shard it came from. */
  bucket: number;
  shard: number;
}

/** Where a page ends: the sort key and the id of its last note. */
export type Cursor = Pick<Note, 'createdAt' | 'id'>;

/** A page of notes across tenants, newest first (created_at DESC, id DESC); `next` is null on the last. */
export type NotePage = { notes: Note[]; next: Cursor | null };

/**
 * What adding a shard did: the shard added, the rows copied to it (those whose tenants it now serves) and
 * the buckets moved (0 for a router without buckets), and the longest time writes to any part of the data
 * waited while it switched, in ms (0 for a router that never holds a write; never more than the reshard took).
 */
export type ReshardReport = { shard: number; rowsMoved: number; bucketsMoved: number; pauseMs: number };

/**
 * Called by a router while a reshard is in flight, with the tenants whose rows are moving, so the
 * spec (and you) can see what happens to writes that arrive then:
 * - `afterCopy` each time rows have been copied to their new shard, before anything else happens to them;
 * - `beforeSwitch` when the new shard is about to serve them (for a bucket router: the copy is complete
 *   and verified, the switch is next). A write made then must not be lost; the router may hold it
 *   until the switch is done, so the hook does not wait for it to finish.
 */
export interface MoveHooks {
  afterCopy?(tenants: string[]): Promise<void>;
  beforeSwitch?(tenants: string[]): Promise<void>;
}

/** What a router is built from: the shards and the catalog (`shards.catalog`) every instance reads. */
export type RouterDeps = { shards: ShardSet; hooks: MoveHooks };

/** The operations the API needs from a router. */
export interface ShardRouter {
  /** Creates the router's own tables (catalog, shards) if absent. Runs at every start, on every instance. */
  prepare(): Promise<void>;
  /**
   * For each tenant, the shards its notes live on, read fresh from the catalog: one for most tenants,
   * the first being where its notes go by default; several for a tenant split over many.
   */
  locate(tenants: readonly string[]): Promise<number[][]>;
  /** Stores new notes for `tenant`, in one transaction; returns them. */
  create(tenant: string, bodies: readonly string[]): Promise<Note[]>;
  /** Changes the body of one of `tenant`'s notes; undefined when it has none with that id. */
  update(tenant: string, id: string, body: string): Promise<Note | undefined>;
  /** `tenant`'s notes, newest first (at most 1,000). */
  list(tenant: string): Promise<Note[]>;
  /** One page of the notes of several tenants, newest first, after `after` (a cursor from the previous page). */
  listAcross(tenants: readonly string[], page: { limit: number; after?: Cursor }): Promise<NotePage>;
  /** Adds a shard and moves onto it the data that belongs there now, while the API keeps serving. */
  addShard(): Promise<ReshardReport>;
}
