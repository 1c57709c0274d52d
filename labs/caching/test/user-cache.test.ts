/**
 * The caching spec. Baseline tests hold for any correct cache in front of the database; `challenge:`
 * tests fail on the starter's plain cache-aside and pass on the solution. Tests count database reads
 * (every SELECT the pool sends to PostgreSQL, through the test kit's countQueries) and drive races with
 * gates, never with sleeps.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { openLab } from '@labs/lab-kit';
import { countQueries, type QueryCounter } from '@labs/test-kit';
import cachingLab from '../server/lab.ts';
import type { UserRepository } from '../server/user-repository.ts';
import { CURRENT_SCHEMA_VERSION } from '../server/users.ts';

// The lab as `lab serve` starts it, on this file's own database and key prefix (both removed when it
// closes). Every instance below is built on this one context.
const lab = await openLab(cachingLab);
afterAll(() => lab.close());
// One pool for every instance, so one counter sees every query they send, and one client to read TTLs.
const pool = await lab.context.database({ max: 20 });
const redis = await lab.context.redis();
// The first build of a context prepares its database (the table, 500 users): done here, before any
// test counts queries.
await cachingLab.build(lab.context, { pool, redis, seedUsers: 500 });

/** A SELECT: a read that reached PostgreSQL (writes and transaction statements are not reads). */
const isRead = (sql: string) => /^\s*select\b/i.test(sql);

interface InstanceOptions {
  /** The deployment this instance belongs to (default: the current schema version). */
  schemaVersion?: number;
  ttlMs?: number;
  /** Wraps this instance's repository, e.g. to pause it at a chosen moment. */
  wrap?: (repository: UserRepository) => UserRepository;
  /** Gives this instance a Redis connection that is closed: every command fails at once. */
  redisDown?: boolean;
  /** Receives the Redis failures the cache reports. */
  onCacheError?: (error: Error) => void;
}

let clusterNo = 0;
let instanceNo = 0;
let counter: QueryCounter | undefined;

/**
 * App instances that share one Redis keyspace and one database, as separate processes behind a load
 * balancer would (each instance has its own Redis connection and its own cache object).
 */
function createCluster() {
  const prefix = `${lab.context.prefix}${++clusterNo}:`; // a fresh keyspace per test
  // The test kit counts what the pool really sends; tests run one at a time, so from now on it is ours.
  counter?.stop();
  counter = countQueries(pool);
  const queries = counter;
  let arrived = 0;
  const waiting: { count: number; resolve: () => void }[] = [];
  return {
    prefix,
    /** SELECTs run by every instance of this cluster so far. */
    get reads() {
      return queries.queries.filter(isRead).length;
    },
    /** Resolves once `count` HTTP requests have reached this cluster's instances. */
    whenArrived(count: number): Promise<void> {
      return new Promise((resolve) => waiting.push({ count, resolve }));
    },
    async start(options: InstanceOptions = {}): Promise<string> {
      const {
        schemaVersion = CURRENT_SCHEMA_VERSION,
        ttlMs = 60_000,
        wrap = (r) => r,
        redisDown = false,
        onCacheError,
      } = options;
      const connection = await lab.context.redis(); // closed with the lab
      if (redisDown) connection.disconnect(); // no reconnection: commands reject with "Connection is closed."
      const { app } = await cachingLab.build(lab.context, {
        pool,
        redis: connection,
        prefix,
        schemaVersion,
        ttlMs,
        wrapRepository: wrap,
        onCacheError,
        instance: `app-${++instanceNo}`,
        onError: () => {},
      });
      const server = await lab.context.listen((req, res) => {
        arrived += 1;
        for (const w of waiting) if (arrived >= w.count) w.resolve();
        app(req, res);
      });
      return server.url;
    },
    /** Every key under this cluster's prefix with its remaining time to live in ms. */
    async ttls(): Promise<number[]> {
      const keys = await redis.keys(`${prefix}*`);
      return Promise.all(keys.map((k) => redis.pttl(k)));
    },
  };
}

/** The media type of every error body (RFC 9457), with or without a charset. */
const PROBLEM = /^application\/problem\+json\b/;

async function getUser(url: string, id: number | string) {
  const res = await fetch(`${url}/users/${id}`);
  return {
    status: res.status,
    cache: res.headers.get('x-cache'),
    type: res.headers.get('content-type'),
    body: (await res.json()) as Record<string, unknown>,
  };
}

async function putUser(url: string, id: number | string, body: unknown) {
  const res = await fetch(`${url}/users/${id}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    body: (await res.json()) as Record<string, unknown>,
  };
}

/** A promise and the function that resolves it: lets a test hold a request at a chosen point. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

/**
 * Holds the first call of one repository method, after the database has answered it: `reached`
 * resolves there, and the call returns once `release()` is called. A request paused at the chosen
 * point of a race; later calls pass straight through.
 */
function holdFirstCall(method: 'find' | 'save') {
  const reached = gate();
  const released = gate();
  let held = false;
  const wrap = (repository: UserRepository): UserRepository => {
    const original = repository[method] as (...args: unknown[]) => Promise<unknown>;
    const holding = async (...args: unknown[]) => {
      const result = await original.apply(repository, args);
      if (!held) {
        held = true;
        reached.open();
        await released.opened;
      }
      return result;
    };
    return { ...repository, [method]: holding };
  };
  return { wrap, reached: reached.opened, release: released.open };
}

describe('baseline: what any cache in front of the database must do', () => {
  it('returns what the database holds', async () => {
    const cluster = createCluster();
    const url = await cluster.start();
    const first = await getUser(url, 3);
    expect(first.status).toBe(200);
    expect(first.body).toEqual({
      id: 3,
      name: 'User 3',
      email: 'user3@example.com',
      version: 1,
      updatedAt: expect.any(String),
    });
    expect((await getUser(url, 3)).body).toEqual(first.body);
  });

  it('serves repeated reads from the cache: one database read, then hits', async () => {
    const cluster = createCluster();
    const [a, b] = [await cluster.start(), await cluster.start()];
    const caches = [];
    for (const url of [a!, a!, b!, b!]) caches.push((await getUser(url, 4)).cache);
    expect(caches).toEqual(['miss', 'hit', 'hit', 'hit']);
    expect(cluster.reads).toBe(1);
  });

  it('answers 404 for a user that does not exist', async () => {
    const url = await createCluster().start();
    for (let i = 0; i < 2; i++) {
      expect(await getUser(url, 999_999)).toMatchObject({
        status: 404,
        type: expect.stringMatching(PROBLEM),
        body: { status: 404, title: 'Not Found', detail: 'No user with id 999999' },
      });
    }
  });

  it('rejects a malformed id with a 400 that says what an id is', async () => {
    const url = await createCluster().start();
    for (const bad of ['abc', '0', '-1', '1.5', '01', '2147483648', '1e3']) {
      const res = await getUser(url, bad);
      expect(res.status, `GET /users/${bad}`).toBe(400);
      expect(res.type).toMatch(PROBLEM);
      expect(res.body).toMatchObject({ status: 400, title: 'Bad Request' });
      expect(res.body.detail).toBe(`id: must be a whole number from 1 to 2147483647, got "${bad}"`);
    }
    expect((await putUser(url, 'abc', { name: 'A', email: 'a@example.com' })).status).toBe(400);
  });

  it('answers other malformed requests with a 4xx in JSON, never a 500', async () => {
    const url = await createCluster().start();
    const badEncoding = await fetch(`${url}/users/%ZZ`);
    expect(badEncoding.status, 'a URL that is not valid percent-encoding').toBe(400);
    expect(badEncoding.headers.get('content-type')).toMatch(PROBLEM);
    expect(await badEncoding.json()).toMatchObject({ status: 400, title: 'Bad Request', detail: expect.any(String) });
    const charset = await fetch(`${url}/users/5`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json; charset=latin-9' },
      body: '{}',
    });
    expect(charset.status, 'a charset the server cannot read').toBe(415);
    expect(charset.headers.get('content-type')).toMatch(PROBLEM);
    expect(await charset.json()).toMatchObject({
      status: 415,
      title: 'Unsupported Media Type',
      detail: expect.any(String),
    });
    const route = await fetch(`${url}/users/5`, { method: 'DELETE' });
    expect(route.status, 'a route that does not exist').toBe(404);
    expect(route.headers.get('content-type')).toMatch(PROBLEM);
    expect(await route.json()).toEqual({ title: 'Not Found', status: 404, detail: 'No route for DELETE /users/5' });
  });

  it('rejects a bad body with a 400 that names every problem', async () => {
    const url = await createCluster().start();
    const nameProblem = 'name: must be a string of 1 to 100 characters';
    const emailProblem = 'email: must look like user@example.com (at most 254 characters)';
    expect(await putUser(url, 5, {})).toEqual({
      status: 400,
      type: expect.stringMatching(PROBLEM),
      body: {
        title: 'Bad Request',
        status: 400,
        detail: `${nameProblem}; ${emailProblem}`,
        errors: [nameProblem, emailProblem],
      },
    });
    expect((await putUser(url, 5, { name: 'x'.repeat(101), email: 'a@example.com' })).body.detail).toBe(nameProblem);
    expect((await putUser(url, 5, { name: 'Ada', email: 'not-an-email' })).body.detail).toMatch(
      /^email: must look like/,
    );
    expect(await putUser(url, 5, '{"name": ')).toEqual({
      status: 400,
      type: expect.stringMatching(PROBLEM),
      body: { title: 'Bad Request', status: 400, detail: 'The body is not valid JSON' },
    });
    expect((await putUser(url, 5, [1, 2])).body.detail).toMatch(/^body must be a JSON object/);
    expect((await getUser(url, 5)).body).toMatchObject({ name: 'User 5', version: 1 }); // nothing was written
  });

  it('rejects a JSON body that is valid but not an object (null, a number, a string) as not an object', async () => {
    const url = await createCluster().start();
    for (const body of ['null', '5', '"Ada"']) {
      const res = await putUser(url, 6, body);
      expect(res, `PUT body ${body}`).toMatchObject({
        status: 400,
        type: expect.stringMatching(PROBLEM),
        body: { status: 400, title: 'Bad Request' },
      });
      expect(res.body.detail, `PUT body ${body}`).toMatch(/^body must be a JSON object like/);
    }
    expect((await getUser(url, 6)).body).toMatchObject({ name: 'User 6', version: 1 }); // nothing was written
  });

  it('rejects a name or email containing a NUL character with a 400, not a database error', async () => {
    // PostgreSQL text cannot hold U+0000 (it answers SQLSTATE 22021): the input check must catch it first.
    const url = await createCluster().start();
    expect(await putUser(url, 7, { name: 'Ada\u0000Lovelace', email: 'ada@example.com' })).toMatchObject({
      status: 400,
      type: expect.stringMatching(PROBLEM),
      body: { status: 400, title: 'Bad Request', detail: 'name: must not contain the NUL character (\\u0000)' },
    });
    expect(await putUser(url, 7, { name: 'Ada', email: 'ada\u0000@example.com' })).toMatchObject({
      status: 400,
      body: { status: 400, detail: 'email: must not contain the NUL character (\\u0000)' },
    });
    expect((await getUser(url, 7)).body).toMatchObject({ name: 'User 7', version: 1 }); // nothing was written
  });

  it('PUT creates a missing user (201) and replaces an existing one (200), bumping its version', async () => {
    const url = await createCluster().start();
    expect((await getUser(url, 600)).status).toBe(404);
    const created = await putUser(url, 600, { name: '  Grace Hopper ', email: 'grace@example.com' });
    expect(created).toMatchObject({ status: 201, body: { id: 600, name: 'Grace Hopper', version: 1 } });
    // Even a cache that remembered the 404 must now find the user: the write replaced what it knew.
    expect(await getUser(url, 600)).toMatchObject({ status: 200, body: { name: 'Grace Hopper', version: 1 } });
    const replaced = await putUser(url, 600, { name: 'Grace B. Hopper', email: 'grace@example.com' });
    expect(replaced).toMatchObject({ status: 200, body: { name: 'Grace B. Hopper', version: 2 } });
  });

  it('gives every entry it stores a TTL of at most ttlMs', async () => {
    const cluster = createCluster();
    const url = await cluster.start({ ttlMs: 30_000 });
    for (const id of [10, 11, 12, 13, 14, 888_888]) await getUser(url, id); // a remembered 404 expires too
    const ttls = await cluster.ttls();
    expect(ttls.length).toBeGreaterThanOrEqual(5);
    for (const ttl of ttls) expect(ttl > 0 && ttl <= 30_000, `PTTL ${ttl}`).toBe(true);
  });

  it('reads the database again once an entry has expired (real time: Redis keeps its own clock)', async () => {
    const cluster = createCluster();
    const url = await cluster.start({ ttlMs: 200 });
    expect((await getUser(url, 15)).cache).toBe('miss');
    // Redis expires keys by its own clock, which a fake Date cannot move: wait for the key to go.
    const deadline = Date.now() + 3000;
    while ((await cluster.ttls()).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(await getUser(url, 15)).toMatchObject({ status: 200, cache: 'miss', body: { id: 15 } });
    expect(cluster.reads).toBe(2);
  });
});

describe('challenges: what plain cache-aside with a TTL gets wrong', () => {
  it('challenge: a read right after a successful write returns the new value, from every instance', async () => {
    const cluster = createCluster();
    const [a, b] = [await cluster.start(), await cluster.start()];
    await getUser(a!, 20);
    await getUser(b!, 20); // both instances have now seen (and cached) version 1
    expect((await putUser(a!, 20, { name: 'Renamed', email: 'user20@example.com' })).status).toBe(200);
    for (const url of [a!, b!]) {
      const { body } = await getUser(url, 20);
      expect(
        { name: body.name, version: body.version },
        `read from ${url === a ? 'the writing' : 'the other'} instance`,
      ).toEqual({ name: 'Renamed', version: 2 });
    }
  });

  it('challenge: two writes that finish in the opposite order to their commits leave the later one', async () => {
    // Why a write deletes the entry instead of storing what it wrote: the first writer commits, then
    // stalls (a GC pause, a slow network) before it reaches the cache; the second commits and finishes.
    const cluster = createCluster();
    const firstWrite = holdFirstCall('save'); // held once committed
    const slow = await cluster.start({ wrap: firstWrite.wrap });
    const fast = await cluster.start();
    await getUser(fast, 26); // cached: version 1
    const first = putUser(slow, 26, { name: 'First write', email: 'user26@example.com' });
    await firstWrite.reached; // version 2 is committed; its writer has not touched the cache yet
    expect(await putUser(fast, 26, { name: 'Second write', email: 'user26@example.com' })).toMatchObject({
      status: 200,
      body: { version: 3 },
    });
    firstWrite.release();
    expect((await first).status).toBe(200);
    for (const url of [slow, fast]) {
      const { body } = await getUser(url, 26);
      expect(
        { name: body.name, version: body.version },
        'the cache kept a value older than the last committed write',
      ).toEqual({ name: 'Second write', version: 3 });
    }
  });

  it('challenge: a read that raced a write does not leave the old value in the cache', async () => {
    // The race of cache-aside: a reader misses and reads the database (version 1); a writer commits
    // version 2 and invalidates; only then does the reader store what it read. Gates fix the order.
    const cluster = createCluster();
    const firstRead = holdFirstCall('find');
    const reader = await cluster.start({ wrap: firstRead.wrap });
    const writer = await cluster.start();
    const slowRead = getUser(reader, 21);
    await firstRead.reached; // the reader holds version 1, not yet stored
    expect((await putUser(writer, 21, { name: 'After the race', email: 'user21@example.com' })).status).toBe(200);
    firstRead.release();
    await slowRead; // it may answer version 1: it began before the write finished
    for (const url of [reader, writer]) {
      const { body } = await getUser(url, 21);
      expect(
        { name: body.name, version: body.version },
        'the reader stored what it read before the write, after the write',
      ).toEqual({ name: 'After the race', version: 2 });
    }
  });

  it('challenge: 200 concurrent reads of a cold key, over two instances, cause one database read', async () => {
    // The database read is held until all 200 requests have arrived, so every one of them finds the
    // key cold, however fast the first read would have been.
    const cluster = createCluster();
    const allArrived = cluster.whenArrived(200);
    const hold = (repository: UserRepository): UserRepository => ({
      ...repository,
      async find(id) {
        await allArrived;
        return repository.find(id);
      },
    });
    const urls = [await cluster.start({ wrap: hold }), await cluster.start({ wrap: hold })];
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => getUser(urls[i % 2]!, 22)));
    expect(results.every((r) => r.status === 200 && r.body.id === 22)).toBe(true);
    expect(cluster.reads, `${cluster.reads} database reads for 200 concurrent requests`).toBe(1);
  });

  it('challenge: after a deployment (schema version bumped), no entry of the old version is served', async () => {
    const cluster = createCluster();
    const before = await cluster.start({ schemaVersion: CURRENT_SCHEMA_VERSION - 1 });
    expect((await getUser(before, 23)).body).not.toHaveProperty('updatedAt'); // cached in the old shape
    const after = await cluster.start({ schemaVersion: CURRENT_SCHEMA_VERSION });
    const read = await getUser(after, 23);
    expect(read.body, 'the new deployment read a user in the old shape').toHaveProperty('updatedAt');
    // A rolling deployment: old and new instances serve side by side. A write on a new instance must
    // not leave the old instances serving what they cached.
    await putUser(after, 23, { name: 'Written by v2', email: 'user23@example.com' });
    expect((await getUser(before, 23)).body, 'an old instance after a write on a new one').toMatchObject({
      name: 'Written by v2',
      version: 2,
    });
    // And the other way round: both versions have the user cached again, and an old instance writes.
    expect((await getUser(after, 23)).body).toMatchObject({ version: 2 });
    await putUser(before, 23, { name: 'Written by v1', email: 'user23@example.com' });
    expect((await getUser(after, 23)).body, 'a new instance after a write on an old one').toMatchObject({
      name: 'Written by v1',
      version: 3,
    });
  });

  it('challenge: repeated reads of a missing id reach the database once', async () => {
    const cluster = createCluster();
    const url = await cluster.start();
    for (let i = 0; i < 20; i++) expect((await getUser(url, 777_777)).status).toBe(404);
    expect(cluster.reads, `${cluster.reads} database reads for 20 requests for the same missing id`).toBe(1);
  });

  it('challenge: with Redis down, reads and writes are answered from the database and the failures reported', async () => {
    const cluster = createCluster();
    const failures: Error[] = [];
    const url = await cluster.start({ redisDown: true, onCacheError: (error) => failures.push(error) });
    expect(await getUser(url, 25), 'a read while Redis is down').toMatchObject({
      status: 200,
      cache: 'miss',
      body: { id: 25, name: 'User 25', version: 1 },
    });
    expect((await getUser(url, 999_998)).status).toBe(404);
    expect(await putUser(url, 25, { name: 'Written without Redis', email: 'user25@example.com' })).toMatchObject({
      status: 200,
      body: { version: 2 },
    });
    expect(await getUser(url, 25)).toMatchObject({ status: 200, body: { name: 'Written without Redis', version: 2 } });
    expect(failures.length, 'Redis failures passed to onCacheError').toBeGreaterThanOrEqual(4);
  });

  it('challenge: entries filled at the same moment do not all expire at the same moment', async () => {
    const cluster = createCluster();
    const url = await cluster.start({ ttlMs: 60_000 });
    await Promise.all(Array.from({ length: 40 }, (_, i) => getUser(url, 100 + i)));
    const ttls = await cluster.ttls();
    const spread = Math.max(...ttls) - Math.min(...ttls);
    expect(spread, `40 entries filled together expire within ${spread} ms of each other`).toBeGreaterThanOrEqual(3000);
  });
});
