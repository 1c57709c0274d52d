/**
 * The caching spec. Baseline tests hold for any correct cache in front of the database; `challenge:`
 * tests fail on the starter's plain cache-aside and pass on the solution. Tests count database reads
 * (every SELECT the pool sends to PostgreSQL, through the test kit's meterSql) and drive races with
 * gates, never with sleeps. Only the fault tests read the clock: answering promptly while a service is
 * down or stalled is the behaviour they check, so each bounds a request's time generously; and the
 * test of the cache's own lease, whose length against the slowest read the pool allows is what it checks.
 */
import { once } from 'node:events';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import calculateSlot from 'cluster-key-slot';
import { createPgPool, createRedisClient } from '@labs/services';
import { expectNoProcessDied, keysWithoutExpiry, meterSql, type SqlMeter, stallingProxy, useLab } from '@labs/test-kit';
import { createUserCache } from '#user-cache';
import { RETRY_AFTER_SEC } from '../server/app.ts';
import cachingLab, { CACHE_REDIS_OPTIONS, DATABASE_POOL_OPTIONS } from '../server/lab.ts';
import type { UserRepository } from '../server/user-repository.ts';
import { CURRENT_SCHEMA_VERSION } from '../server/users.ts';

// The lab as `lab serve` starts it, on this file's own database and key prefix (both removed when it
// closes). Every instance below is built on this one context. The test kit closes it after the file and
// checks its invariants after each test: every key the cache leaves in Redis (entries, remembered
// 404s, leases) has an expiry.
const lab = await useLab(cachingLab);
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
  /** This instance's Redis client (default: a new one on the shared server). */
  redis?: Redis;
  /** This instance's pool (default: the spec's one, on which queries are counted). */
  pool?: pg.Pool;
  /** Receives the Redis failures the cache reports. */
  onCacheError?: (error: Error) => void;
  /** How long this instance's cache may remember a missing user (default: the cache's own choice). */
  missingTtlMs?: number;
  /** How long this instance's cache may hold a fill lease (default: the cache's own choice). */
  leaseMs?: number;
}

let clusterNo = 0;
let instanceNo = 0;
let counter: SqlMeter | undefined;

/**
 * App instances that share one Redis keyspace and one database, as separate processes behind a load
 * balancer would (each instance has its own Redis connection and its own cache object).
 */
function createCluster() {
  const prefix = `${lab.context.prefix}${++clusterNo}:`; // a fresh keyspace per test
  // The test kit counts what the pool really sends; tests run one at a time, so from now on it is ours.
  counter?.stop();
  counter = meterSql(pool, { keepSent: true });
  const queries = counter;
  let arrived = 0;
  const waiting: { count: number; resolve: () => void }[] = [];
  return {
    prefix,
    /** SELECTs run by every instance of this cluster so far. */
    get reads() {
      return queries.sent.map((s) => s.text).filter(isRead).length;
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
      const connection = options.redis ?? (await lab.context.redis()); // closed with the lab
      if (redisDown) connection.disconnect(); // no reconnection: commands reject with "Connection is closed."
      const { app } = await cachingLab.build(lab.context, {
        pool: options.pool ?? pool,
        redis: connection,
        prefix,
        schemaVersion,
        ttlMs,
        wrapRepository: wrap,
        onCacheError,
        ...(options.missingTtlMs === undefined && options.leaseMs === undefined
          ? {}
          : {
              createCache: (o) =>
                createUserCache({
                  ...o,
                  ...(options.missingTtlMs === undefined ? {} : { missingTtlMs: options.missingTtlMs }),
                  ...(options.leaseMs === undefined ? {} : { leaseMs: options.leaseMs }),
                }),
            }),
        instance: `app-${++instanceNo}`,
        onError: () => {},
        onOutage: () => {},
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
 * Holds the first call of one repository method, after the database has answered it (or, with
 * `at: 'before'`, before the query is sent): `reached` resolves there, and the call goes on once
 * `release()` is called. A request paused at the chosen point of a race; later calls pass straight through.
 * With `nth`, the nth call of the wrapped repository is the one held instead (1 = the first): two holds
 * wrapped around one instance's repository pause two of its requests, each at its own gate.
 */
function holdFirstCall(method: 'find' | 'save', at: 'before' | 'after' = 'after', nth = 1) {
  const reached = gate();
  const released = gate();
  let calls = 0;
  const hold = async () => {
    reached.open();
    await released.opened;
  };
  const wrap = (repository: UserRepository): UserRepository => {
    const original = repository[method] as (...args: unknown[]) => Promise<unknown>;
    const holding = async (...args: unknown[]) => {
      const held = ++calls === nth;
      if (held && at === 'before') await hold();
      const result = await original.apply(repository, args);
      if (held && at === 'after') await hold();
      return result;
    };
    return { ...repository, [method]: holding };
  };
  return { wrap, reached: reached.opened, release: released.open };
}

/**
 * Holds a reader between two of its cache commands: once the reader's database read has answered (or
 * failed), its `n`-th Redis command (1 = the first after the read) and everything it sends after it wait until
 * `release()`. `reached` resolves once Redis has run every command the reader sent before the held one
 * (a PING on the same connection answers only after them); `release()` sends the held commands in
 * their order and lets the rest through. A pipeline (MULTI ... EXEC) is written in one piece, so it
 * counts as one command. With `after: 'save'`, a writer is held the same way, counted from its save.
 */
function holdNthCommandAfterRead(n: number, after: 'find' | 'save' = 'find') {
  const reached = gate();
  let afterRead = false;
  let sent = 0;
  let lastPipeline: unknown;
  let holding = false;
  let passing = false;
  const held: (() => void)[] = [];
  const wrap = (repository: UserRepository): UserRepository => {
    const original = repository[after] as (...args: unknown[]) => Promise<unknown>;
    const counted = async (...args: unknown[]) => {
      try {
        return await original.apply(repository, args);
      } finally {
        afterRead = true; // what a reader does with its lease once its read failed counts too
      }
    };
    return { ...repository, [after]: counted };
  };
  const instrument = (client: Redis): Redis => {
    const send = client.sendCommand.bind(client);
    client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
      const [command, pipeline] = args;
      if (passing || !afterRead) return send(...args);
      if (!holding) {
        if (pipeline === undefined || pipeline !== lastPipeline) sent += 1;
        lastPipeline = pipeline;
        if (sent < n) return send(...args);
        holding = true;
        passing = true; // the fence itself goes straight to Redis
        const fence = client.ping();
        passing = false;
        fence.then(reached.open, reached.open);
      }
      held.push(() => send(...args)); // its caller sees the reply (or the failure) on command.promise
      return command.promise;
    }) as Redis['sendCommand'];
    return client;
  };
  const release = () => {
    passing = true;
    for (const next of held.splice(0)) next();
  };
  return { wrap, instrument, reached: reached.opened, release };
}

/**
 * Holds a writer's cache commands: once its database write has committed, every Redis command the
 * writer's instance sends waits until `release()`. `reached` resolves when the first one is held.
 * With `answerLost`, the save commits and then fails as a connection cut before its answer does.
 */
function holdCommandsAfterSave(answerLost = false) {
  const reached = gate();
  const released = gate();
  let afterSave = false;
  const wrap = (repository: UserRepository): UserRepository => ({
    ...repository,
    async save(id, input) {
      const saved = await repository.save(id, input);
      afterSave = true;
      if (answerLost) {
        // SQLSTATE 08006 (connection failure): the routes answer it with a 503, as a real cut.
        throw Object.assign(new Error('Connection terminated unexpectedly (injected, after the commit)'), {
          code: '08006',
        });
      }
      return saved;
    },
  });
  const instrument = (client: Redis): Redis => {
    const send = client.sendCommand.bind(client);
    client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
      if (!afterSave) return send(...args);
      reached.open();
      void released.opened.then(() => send(...args)); // its caller sees the reply on command.promise
      return args[0].promise;
    }) as Redis['sendCommand'];
    return client;
  };
  return { wrap, instrument, reached: reached.opened, release: released.open };
}

/**
 * The spec's fake clock, for what an instance still does once a request has answered: `wrap` puts
 * vitest's fake timers in place as soon as the instance's write has committed, so that every timer its
 * cache arms from then on (setTimeout, setInterval, and those of node:timers and node:timers/promises)
 * fires only when the test moves the clock, and Date and performance.now() move with it: a day passes
 * in milliseconds, and a retry that gives up after so long by its own clock does give up. `restore()`
 * puts real time back.
 */
function fakeClockOnceSaved() {
  const wrap = (repository: UserRepository): UserRepository => ({
    ...repository,
    async save(id, input) {
      const saved = await repository.save(id, input);
      vi.useFakeTimers({
        toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'],
        fakeNodeBuiltins: true,
        shouldClearNativeTimers: true, // a timer armed before (a pool's idle timer) can still be cleared
        shouldAdvanceTime: true, // and real time moves it too: a pause the write awaits before it answers ends
      });
      return saved;
    },
  });
  return { wrap, restore: () => vi.useRealTimers() };
}

/**
 * Runs `attempt` until it resolves (and, for an answer, until it is not a 503), at most 10 times. For
 * set-up and recovery through a pool with the API's 2 s connection timeout, which a very busy machine
 * can exceed: what the test checks comes after.
 */
async function retried<T>(attempt: () => Promise<T>): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      const result = await attempt();
      if (i === 10 || (result as { status?: number }).status !== 503) return result;
    } catch (error) {
      if (i === 10) throw error;
    }
  }
}

/** `client`, its `n`-th command (counted from now) rejected with an error, as a timed-out one is. */
function failNthCommand(n: number, client: Redis) {
  const send = client.sendCommand.bind(client);
  let sent = 0;
  client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    sent += 1;
    if (sent !== n) return send(...args);
    args[0].reject(new Error(`Command timed out (injected: command #${n})`));
    return args[0].promise;
  }) as Redis['sendCommand'];
  return { client, failed: () => sent >= n };
}

/** A command an instance sent on its own Redis connection: its name, the keys it names, what it went out in. */
interface SentCommand {
  name: string;
  keys: string[];
  /** The pipeline or MULTI transaction it was sent in (one per batch), or undefined when sent alone. */
  batch: unknown;
}

/**
 * Records what an instance sends on `client`: each command's name and its keys as ioredis reads them
 * (Command#getKeys(), which knows where the keys of every command are, a script's EVAL or EVALSHA
 * included), and the Lua of every script it defines or sends whole. A script runs its own commands
 * inside Redis, where a connection never sees them, so its source is kept to be read.
 */
function recordCommands(client: Redis) {
  const sent: SentCommand[] = [];
  const scripts: string[] = [];
  let transaction: object | undefined; // a MULTI sent command by command, outside a pipeline
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    const [command, stream] = args;
    const name = command.name.toLowerCase();
    if (name === 'multi' && stream === undefined) transaction = {};
    sent.push({ name, keys: command.getKeys().map(String), batch: stream ?? transaction });
    if (name === 'exec' || name === 'discard') transaction = undefined;
    if (name === 'eval') scripts.push(String(command.args[0]));
    if (name === 'script' && String(command.args[0]).toLowerCase() === 'load') scripts.push(String(command.args[1]));
    return send(...args);
  }) as Redis['sendCommand'];
  const define = client.defineCommand.bind(client);
  client.defineCommand = ((name, definition) => {
    scripts.push(definition.lua);
    define(name, definition);
  }) as Redis['defineCommand'];
  return { client, sent, scripts };
}

/**
 * One instance's ordinary traffic, recorded on its own connection: a cold read (a miss and its fill),
 * a hit, a missing user twice (a 404, then a remembered one), a write, and the read after it.
 */
async function recordedTraffic(id: number) {
  const cluster = createCluster();
  const recording = recordCommands(await lab.context.redis());
  const url = await cluster.start({ redis: recording.client });
  expect((await getUser(url, id)).status, 'a cold read').toBe(200);
  expect((await getUser(url, id)).status, 'a read of a cached user').toBe(200);
  for (let i = 0; i < 2; i++) expect((await getUser(url, 888_886)).status, 'a missing user').toBe(404);
  expect((await putUser(url, id, { name: 'Recorded', email: `user${id}@example.com` })).status, 'a write').toBe(200);
  expect((await getUser(url, id)).status, 'the read after the write').toBe(200);
  expect(recording.sent.length, 'commands recorded on the instance').toBeGreaterThan(0);
  return { ...recording, prefix: cluster.prefix, url };
}

/** Every key under `prefix` (named without it) with its PTTL: -1 is no expiry, -2 gone since it was listed. */
async function expiries(prefix: string): Promise<{ key: string; ms: number }[]> {
  const keys = await redis.keys(`${prefix}*`);
  return Promise.all(keys.map(async (key) => ({ key: key.slice(prefix.length), ms: await redis.pttl(key) })));
}

/** Polls `check` every 10 ms until it is true; fails, naming `what`, after 5 s. */
async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`Waited 5 s for ${what}`);
}

/** One request, its status, its Retry-After and how long it took to be answered. */
async function timed(url: string, method: 'GET' | 'PUT', id: number) {
  const started = performance.now();
  const res = await fetch(`${url}/users/${id}`, {
    method,
    ...(method === 'PUT'
      ? {
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ name: `Written during a fault`, email: `user${id}@example.com` }),
        }
      : {}),
  });
  await res.arrayBuffer();
  return {
    request: `${method} /users/${id}`,
    status: res.status,
    type: res.headers.get('content-type'),
    retryAfter: res.headers.get('retry-after'),
    ms: Math.round(performance.now() - started),
  };
}

/** The spec's PostgreSQL server and database, from its pool. */
const databaseUrl = new URL(pool.options.connectionString ?? 'postgres://127.0.0.1:5432/postgres');

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

  it('gives every entry it stores a TTL of at most ttlMs, and a remembered 404 at most missingTtlMs', async () => {
    // A 404 is remembered for less than an entry: a user created by something other than this cache's
    // writes (a sign-up service, a migration) is seen once the shorter time is up.
    const cluster = createCluster();
    const url = await cluster.start({ ttlMs: 20_000, missingTtlMs: 4_000 });
    for (const id of [10, 11, 12, 13, 14, 888_888]) await getUser(url, id); // a remembered 404 expires too
    const keys = await redis.keys(`${cluster.prefix}*`);
    const ttls = await Promise.all(keys.map(async (key) => ({ key, ms: await redis.pttl(key) })));
    expect(ttls.length).toBeGreaterThanOrEqual(5);
    for (const { key, ms } of ttls) {
      const bound = key.includes('888888') ? 4_000 : 20_000;
      expect(ms > 0 && ms <= bound, `${key.slice(cluster.prefix.length)}: PTTL ${ms}, at most ${bound}`).toBe(true);
    }
    // Left to choose how long a 404 is remembered, a cache still keeps nothing longer than ttlMs: a
    // default picked for long TTLs (30 s) must not outlive a short one.
    const defaults = createCluster();
    const short = await defaults.start({ ttlMs: 5_000 });
    for (const id of [15, 888_887]) await getUser(short, id);
    const chosen = await redis.keys(`${defaults.prefix}*`);
    expect(chosen.length).toBeGreaterThanOrEqual(1);
    for (const key of chosen) {
      const ms = await redis.pttl(key);
      expect(ms > 0 && ms <= 5_000, `${key.slice(defaults.prefix.length)}: PTTL ${ms}, at most ttlMs 5000`).toBe(true);
    }
    // Nor, where entries live long, longer than 30 s (server/cache.ts states it): the API never passes
    // missingTtlMs, so its default is how long a user another service created stays "not found".
    const long = createCluster();
    const hour = await long.start({ ttlMs: 3_600_000 });
    await getUser(hour, 888_886);
    for (const key of await redis.keys(`${long.prefix}*`)) {
      const ms = await redis.pttl(key);
      expect(
        ms > 0 && ms <= 30_000,
        `${key.slice(long.prefix.length)}: PTTL ${ms}, a 404 remembered by default with ttlMs an hour: at most 30000`,
      ).toBe(true);
    }
    // And a read never lengthens an entry's life (no sliding expiry, on a hit or on a remembered 404):
    // the TTL is the bound on staleness when everything else fails, a write whose DEL Redis refused or a
    // user created by other code, and an entry that each read extends lives as long as it is read. Every
    // key is cut to 9 s, under anything a cache filling for 60 s (a 404 for 20 s) may give, and read again.
    const reads = createCluster();
    const again = await reads.start({ ttlMs: 60_000, missingTtlMs: 20_000 });
    for (const id of [16, 17, 888_889]) await getUser(again, id);
    const cut = await redis.keys(`${reads.prefix}*`);
    expect(cut.length).toBeGreaterThanOrEqual(2);
    for (const key of cut) await redis.pexpire(key, 9_000);
    for (const id of [16, 17, 888_889, 16, 17, 888_889]) await getUser(again, id);
    for (const id of [16, 17]) expect((await getUser(again, id)).cache, `user ${id}, read again`).toBe('hit');
    for (const key of cut) {
      const ms = await redis.pttl(key);
      expect(ms <= 9_000, `${key.slice(reads.prefix.length)}: PTTL ${ms} after hits, cut to 9000 before them`).toBe(
        true,
      );
    }
    // Every bound above is whole seconds, so a cache that stores its expiries in seconds (`EX`, rounded
    // up) keeps each of them while it overshoots what it was asked by up to a second: a TTL of 200 ms
    // lives 1 s, and jitter below a second is rounded away. The class is any stored expiry longer than
    // asked (rounded up, in the wrong unit, jitter added on top). So bounds that are not whole seconds,
    // each key's PTTL read right after the request that stored it: what a reader takes before its
    // database read (a lease) at most leaseMs, an entry at most ttlMs, a 404 at most missingTtlMs.
    const exact = createCluster();
    const held = holdFirstCall('find', 'before');
    const fractional = await exact.start({ wrap: held.wrap, ttlMs: 2_500, missingTtlMs: 1_500, leaseMs: 1_200 });
    const leased = getUser(fractional, 18);
    await held.reached;
    try {
      for (const { key, ms } of await expiries(exact.prefix))
        expect(
          ms !== -1 && ms <= 1_200,
          `${key}, taken before the database read: PTTL ${ms}, at most leaseMs 1200`,
        ).toBe(true);
    } finally {
      held.release();
    }
    expect((await leased).status, 'the held read of user 18').toBe(200);
    for (const id of [19, 888_890]) await getUser(fractional, id);
    const stored = await expiries(exact.prefix);
    expect(stored.length, 'keys stored for users 18 and 19 (and missing user 888890)').toBeGreaterThanOrEqual(2);
    for (const { key, ms } of stored) {
      const [bound, name] = key.includes('888890') ? [1_500, 'missingTtlMs'] : [2_500, 'ttlMs'];
      expect(ms > 0 && ms <= bound, `${key}: PTTL ${ms}, at most ${name} ${bound}`).toBe(true);
    }
    // And a cache of 200 ms, a user and a 404, each read the moment its request is answered (-2: gone
    // already, which is no longer than asked).
    const brief = createCluster();
    const fleeting = await brief.start({ ttlMs: 200 });
    for (const id of [20, 888_891]) {
      await getUser(fleeting, id);
      for (const { key, ms } of await expiries(brief.prefix))
        expect(ms !== -1 && ms <= 200, `${key}: PTTL ${ms} right after it was stored, at most ttlMs 200`).toBe(true);
    }
    // And an expiry is a length of time, counted by Redis: an instance whose clock is an hour ahead (a
    // VM resumed from a snapshot, NTP not yet synced) stores nothing longer than asked. An expiry sent as
    // an instant of the instance's own clock (PXAT, EXAT) lives an hour longer than ttlMs.
    const skewed = createCluster();
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 3_600_000 });
    try {
      const ahead = await skewed.start({ ttlMs: 20_000, missingTtlMs: 4_000 });
      for (const id of [21, 888_892]) await getUser(ahead, id);
    } finally {
      vi.useRealTimers();
    }
    const skewedKeys = await expiries(skewed.prefix);
    expect(skewedKeys.length, 'keys stored by the instance whose clock is an hour ahead').toBeGreaterThanOrEqual(1);
    for (const { key, ms } of skewedKeys) {
      const bound = key.includes('888892') ? 4_000 : 20_000;
      expect(
        ms > 0 && ms <= bound,
        `${key}, stored by an instance whose clock is an hour ahead: PTTL ${ms}, at most ${bound}`,
      ).toBe(true);
    }
  });

  it('a reader paused in its database read has nothing in Redis without an expiry (a lease of a holder that dies expires)', async () => {
    // A reader that takes something in Redis before it reads the database (a lease, a lock) may die
    // there: a crash, a deploy, a timeout. Whatever it took must expire by itself, or that user's key
    // waits for it for ever. The reader is held just before its query, where a crash would leave it.
    const cluster = createCluster();
    const read = holdFirstCall('find', 'before');
    const url = await cluster.start({ wrap: read.wrap, ttlMs: 30_000 });
    const pending = getUser(url, 41);
    await read.reached;
    try {
      expect(await keysWithoutExpiry(redis, cluster.prefix), 'keys a dead reader would leave for ever').toEqual([]);
      // The key is cold, so nothing here is an entry: what a reader takes before its read must not block
      // the key for longer than a slow read takes (the pool gives up on a query after 2.5 s).
      const ttls = await cluster.ttls();
      expect(
        ttls.filter((ttl) => ttl > 10_000),
        'keys a reader took before its database read that would block the user for more than 10 s if it died',
      ).toEqual([]);
    } finally {
      read.release();
    }
    expect((await pending).status).toBe(200);
  });

  it('between any two of its Redis commands, a reader leaves nothing in Redis without an expiry', async () => {
    // A process can die between any two commands, not only during its database read: a lease taken
    // with SETNX and given its expiry by a second command is a lease for ever if the reader dies in
    // between, and that user's readers then wait on it for good. So after every command a reader sends
    // (before the reader may send the next), the keys under the prefix are checked for an expiry.
    const cluster = createCluster();
    const readerRedis = await lab.context.redis();
    const send = readerRedis.sendCommand.bind(readerRedis);
    const forever: string[] = [];
    readerRedis.sendCommand = ((command: Parameters<Redis['sendCommand']>[0], stream?: unknown) => {
      const reply = send(command, stream as never) as Promise<unknown>;
      return reply.then(async (value) => {
        for (const key of await keysWithoutExpiry(redis, cluster.prefix)) forever.push(`${key}, after ${command.name}`);
        return value;
      });
    }) as Redis['sendCommand'];
    const url = await cluster.start({ redis: readerRedis });
    expect((await getUser(url, 46)).status, 'a cold read').toBe(200);
    expect((await getUser(url, 888_887)).status, 'a missing user').toBe(404);
    expect(forever, 'keys left without an expiry, and the command after which they were seen').toEqual([]);
  });

  it('sends Redis no command that walks the keyspace (KEYS, SCAN), in a script or not, on a read, a 404 or a write', async () => {
    // KEYS and SCAN cost time in proportion to every key Redis holds, not to one user's: on a request
    // path they make each request as slow as the whole keyspace is big, and KEYS blocks Redis, which
    // runs one command at a time, for every client meanwhile. A cache knows the names of its keys
    // (key formats are what its versions agree on), so it never has to search for them.
    const { sent, scripts } = await recordedTraffic(81);
    const walking = sent.filter(({ name }) => name === 'keys' || name === 'scan').map(({ name }) => name);
    expect(walking, 'keyspace walks sent by the instance').toEqual([]);
    const inScripts = scripts.filter((lua) => /redis\.p?call\(\s*['"](keys|scan)['"]/i.test(lua));
    expect(inScripts, 'scripts of the instance that walk the keyspace inside Redis').toEqual([]);
  });

  it('names keys of one Redis Cluster slot in each command and each pipeline or transaction it sends', async () => {
    // On Redis Cluster a command, a script or a transaction may only touch keys of one hash slot: one
    // that names keys of two slots fails with CROSSSLOT (and a pipeline's commands go to one node).
    // A user's entry, its lease and its other schema versions' keys must share a slot (a hash tag,
    // the part of a key in {braces}, decides it), or the scripts and the write's DEL fail on every
    // call, and the cache is silently off. The slot is computed as ioredis's cluster client does.
    const { sent, prefix, url } = await recordedTraffic(82);
    const batches = new Map<unknown, SentCommand[]>();
    for (const command of sent) {
      const batch = command.batch ?? command; // a command sent alone is a batch of its own
      batches.set(batch, [...(batches.get(batch) ?? []), command]);
    }
    const crossSlot = [...batches.values()]
      .filter((commands) => new Set(commands.flatMap((c) => c.keys).map((key) => calculateSlot(key))).size > 1)
      .map((commands) =>
        commands.map((c) => `${c.name.toUpperCase()} ${c.keys.map((key) => key.slice(prefix.length)).join(' ')}`),
      );
    expect(crossSlot, 'commands (or batches of them) whose keys are in more than one slot').toEqual([]);
    // And the tag is the user's, not one shared by every user (`{users}`, a version, the prefix): the
    // slot decides the node, so a tag every key shares puts the whole cache, and every request's Redis
    // traffic, on one node of the cluster, however many nodes it has. Eight users' entries are read
    // in, and their keys must fall in several slots.
    for (let id = 83; id <= 89; id++) expect((await getUser(url, id)).status, `a read of user ${id}`).toBe(200);
    const keys = await redis.keys(`${prefix}*`);
    expect(keys.length, 'keys under the prefix once eight users were read').toBeGreaterThanOrEqual(8);
    const slots = new Set(keys.map((key) => calculateSlot(key)));
    expect(
      slots.size,
      `slots of the keys of eight users or more, for keys like ${keys.slice(0, 2).map((key) => key.slice(prefix.length))}`,
    ).toBeGreaterThanOrEqual(5);
  });

  it('a read whose database query fails leaves nothing in Redis: the next reader reads the database at once', async () => {
    // A reader that fails (the database is down for it) must give back whatever it took, or every
    // other reader of that user waits for it to expire. Counted, not timed: after the failure nothing
    // of this user is left under the prefix, and the next reader, on a healthy instance, is answered
    // by one database read of its own.
    const cluster = createCluster();
    const closedPort = new URL(databaseUrl);
    closedPort.host = '127.0.0.1:1'; // nothing listens there: every query fails at once
    const down = createPgPool(closedPort.toString(), DATABASE_POOL_OPTIONS);
    try {
      const failing = await cluster.start({ pool: down });
      const healthy = await cluster.start();
      expect((await getUser(failing, 42)).status, 'a read while its database is down').toBe(503);
      const left = (await redis.keys(`${cluster.prefix}*`)).map((key) => key.slice(cluster.prefix.length));
      expect(left, 'what the failed read left in Redis').toEqual([]);
      expect(await getUser(healthy, 42)).toMatchObject({ status: 200, cache: 'miss', body: { id: 42 } });
      expect(cluster.reads, 'database reads by the next reader').toBe(1);
    } finally {
      await down.end();
    }
  });

  it('a 404 remembered by one instance ends when another instance creates the user', async () => {
    // Instances share what they know through Redis. A "no such user" kept in one process's memory
    // outlives the write on another instance that creates the user: that one keeps answering 404.
    const cluster = createCluster();
    const [a, b] = [await cluster.start(), await cluster.start()];
    for (let i = 0; i < 2; i++) expect((await getUser(a!, 601)).status, 'before the user exists').toBe(404);
    expect((await putUser(b!, 601, { name: 'Created on B', email: 'b@example.com' })).status).toBe(201);
    for (const [name, url] of [
      ['A', a!],
      ['B', b!],
    ] as const)
      expect(await getUser(url, 601), `instance ${name}, after B created the user`).toMatchObject({
        status: 200,
        body: { name: 'Created on B', version: 1 },
      });
  });

  it("a reader that raced a write cannot fill once another reader has taken the key's lease", async () => {
    // The race of cache-aside with a third party: reader A misses and reads the database (version 1), held; a
    // writer commits version 2 and invalidates; reader B misses, takes whatever A held on the key,
    // reads version 2, held. Then A goes on: what it read is older than the write, whoever holds the
    // key now. Then B. The cache must end with version 2. (A cache that never invalidates passes: B's
    // fill comes last. This is about what a guard on the fill must compare.) Twice: A and B on two
    // instances, then both on one instance. A lease is one read's, not one process's: with a token per
    // instance (or per connection), B's lease carries A's token and A's old row passes the check.
    // Nor is a token the time its read began: reads share a millisecond, and machines' clocks disagree,
    // so a later read on an instance whose clock is behind reads the moment an earlier one did. Every
    // clock here reads one frozen moment (a fake Date): a token taken from it is A's and B's alike.
    vi.useFakeTimers({ toFake: ['Date'] });
    onTestFinished(() => {
      vi.useRealTimers();
    });
    for (const [readers, id] of [
      ['on two instances', 38],
      ['on one instance', 31],
    ] as const) {
      const cluster = createCluster();
      const readA = holdFirstCall('find');
      const readB = holdFirstCall('find', 'after', readers === 'on one instance' ? 2 : 1);
      const a = await cluster.start({
        wrap: readers === 'on one instance' ? (r) => readB.wrap(readA.wrap(r)) : readA.wrap,
      });
      const b = readers === 'on one instance' ? a : await cluster.start({ wrap: readB.wrap });
      const writer = await cluster.start();
      const first = getUser(a, id);
      await readA.reached; // A holds version 1, not yet stored
      expect((await putUser(writer, id, { name: 'Before B read', email: `user${id}@example.com` })).status).toBe(200);
      const second = getUser(b, id);
      await readB.reached; // B holds version 2, not yet stored
      readA.release();
      await first; // it may answer version 1: it began before the write finished
      readB.release();
      expect((await second).body).toMatchObject({ version: 2 });
      for (const url of [a, b, writer]) {
        const { body } = await getUser(url, id);
        expect(
          `${body.name}, version ${body.version}`,
          `readers ${readers}: the reader that read before the write stored its row over the lease of the reader that read after it`,
        ).toBe('Before B read, version 2');
      }
    }
  });

  it('a reader held in its database read does not hold up the readers of another user, or of its user in another deployment', async () => {
    // Whatever a reader takes on its key (a lease, a lock) is that key's alone: user 43's read is held
    // before its query, and user 44 is read twice meanwhile, on another instance. The first read of 44
    // fills its entry, so the second is a hit. A key is a user in one schema version: during a rolling
    // deployment an instance of the previous version fills its own entry of user 43, and must not wait
    // on what the current version's reader took (nor leave its own entry unfilled for it).
    const cluster = createCluster();
    const read = holdFirstCall('find', 'before');
    const held = await cluster.start({ wrap: read.wrap, leaseMs: 30_000 });
    const other = await cluster.start();
    const previous = await cluster.start({ schemaVersion: CURRENT_SCHEMA_VERSION - 1 });
    const pending = getUser(held, 43);
    await read.reached;
    try {
      // Not held up: answered long before a wait for user 43's reader would give up (the reader's
      // instance may keep the key 30 s here, a waiter gives up after its own lease; a read takes
      // milliseconds, 2 s is the bound), and the entry filled, so the next read is a hit.
      for (const [url, id, whose] of [
        [other, 44, 'user 44, while user 43 is being read'],
        [
          previous,
          43,
          `user 43 on schema version ${CURRENT_SCHEMA_VERSION - 1}, while version ${CURRENT_SCHEMA_VERSION} reads it`,
        ],
      ] as const) {
        const started = performance.now();
        expect(await getUser(url, id), whose).toMatchObject({ status: 200, cache: 'miss' });
        const ms = Math.round(performance.now() - started);
        expect(ms, `${whose}: answered after ${ms} ms, while user 43's read was held`).toBeLessThan(2000);
        expect(await getUser(url, id), `${whose}, read again`).toMatchObject({ status: 200, cache: 'hit' });
      }
    } finally {
      read.release();
    }
    expect((await pending).status).toBe(200);
  });

  it('a reader waiting for another reader to fill asks Redis a bounded number of times, and is answered soon after the fill', async () => {
    // A reader that finds the user being read by another (a lease) waits for that fill by asking Redis
    // again now and then: not in a tight loop (a few hundred commands a second per waiter turns a hot key
    // into a Redis outage), and not ever more rarely (a pause that doubles without a cap answers up to a
    // whole wait after the fill). Five readers start waiting 200 ms apart while the filling read is held
    // for 2.1 s; at the fill, a pause that keeps doubling has some of them asleep for most of a second.
    // The waiters are counted on their own connection, and timed from the filling reader's answer.
    const cluster = createCluster();
    const read = holdFirstCall('find', 'before');
    const holder = await cluster.start({ wrap: read.wrap });
    const waiterRedis = await lab.context.redis();
    const commands = vi.spyOn(waiterRedis, 'sendCommand');
    const waiter = await cluster.start({ redis: waiterRedis });
    const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    let filledAt = 0;
    const filling = getUser(holder, 45).then((answer) => {
      filledAt = performance.now();
      return answer;
    });
    await read.reached;
    const waiting: Promise<{ status: number; at: number }>[] = [];
    try {
      for (let n = 0; n < 5; n++) {
        const sent = commands.mock.calls.length;
        let answered = false;
        waiting.push(
          getUser(waiter, 45).then(({ status }) => {
            answered = true;
            return { status, at: performance.now() };
          }),
        );
        // Its first look (a read, then whatever it does on a miss), then 200 ms before the next reader.
        const looked = () => answered || commands.mock.calls.length >= sent + 2;
        for (let waited = 0; !looked() && waited < 5000; waited += 5) await pause(5);
        await pause(n < 4 ? 200 : 2100 - 4 * 200);
      }
    } finally {
      read.release();
    }
    expect((await filling).status).toBe(200);
    const answers = await Promise.all(waiting);
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200]);
    const asked = commands.mock.calls.length;
    expect(asked, `Redis commands of five waiting readers over about 2 s`).toBeLessThanOrEqual(300);
    const late = answers.map((a) => Math.round(a.at - filledAt));
    expect(
      Math.max(...late),
      `each waiting reader was answered this many ms after the filling one: ${late}`,
    ).toBeLessThan(500);
  });

  it('a reader waiting on a reader that died reads the database itself once what that reader took has expired, and fills the entry', async () => {
    // A reader can die in its database read (a crash, a deploy, an OOM kill) holding whatever it took
    // on the key (a lease). That expires by itself, and then a reader waiting for its fill must take the
    // key over: take the lease, read the database, fill. A waiter that only watches for the entry once
    // someone else held the lease waits for a fill that never comes, until its own give-up time (30 s
    // here: the waiting instance's lease), and so does every reader of that user after it. Reader A is
    // held before its query and let go only at the end; once the waiter has looked, what A took is made
    // to run out (deleted, as its expiry would), and the waiter is counted, not timed: its Redis commands
    // from then on, the database reads, and the next read of the user.
    const cluster = createCluster();
    const dead = holdFirstCall('find', 'before');
    const holder = await cluster.start({ wrap: dead.wrap, leaseMs: 30_000 });
    const waiterRedis = await lab.context.redis();
    const commands = vi.spyOn(waiterRedis, 'sendCommand');
    const waiter = await cluster.start({ redis: waiterRedis, leaseMs: 30_000 });
    const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    const abandoned = getUser(holder, 51);
    await dead.reached;
    try {
      const taken = await redis.keys(`${cluster.prefix}*`); // what A took before its read: the user is cold
      const sent = commands.mock.calls.length;
      let answer: Awaited<ReturnType<typeof getUser>> | undefined;
      const waiting = getUser(waiter, 51).then((a) => (answer = a));
      waiting.catch(() => {}); // a waiter still waiting when this test fails is not a second failure
      // Its first look (a read, then whatever it does on a miss), or its answer.
      await until(async () => answer !== undefined || commands.mock.calls.length >= sent + 2, 'the waiter to look');
      if (taken.length > 0) await redis.del(...taken); // A is dead: what it took runs out here
      const before = commands.mock.calls.length;
      // Twenty more looks is a second of polling or more: time enough to see the key free and take it.
      for (let i = 0; answer === undefined && commands.mock.calls.length < before + 20 && i < 2000; i++) await pause(5);
      expect(
        answer,
        `the waiter, ${commands.mock.calls.length - before} Redis commands after what the dead reader took ran out: ` +
          `still waiting for a fill nobody will make (it never took the key itself); database reads ${cluster.reads}`,
      ).toBeDefined();
      await waiting;
      expect(answer, 'the waiter').toMatchObject({ status: 200, cache: 'miss', body: { id: 51 } });
      expect(cluster.reads, "database reads while reader A is dead: the waiter's own").toBe(1);
      expect((await getUser(waiter, 51)).cache, "the next read, after the waiter's fill").toBe('hit');
      expect(cluster.reads, 'database reads after the next read').toBe(1);
    } finally {
      dead.release();
    }
    expect((await abandoned).status, 'reader A, let go at last').toBe(200);
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

describe('baseline: under faults, every request is answered within a bound', () => {
  /** Reads and a write of user `id` (a miss, hits or refills, a missing id), one after another. */
  const requests = (id: number) =>
    [
      ['GET', id],
      ['GET', id],
      ['GET', 999_997],
      ['PUT', id],
      ['GET', id],
    ] as const;

  it('answers every request promptly, and never with a 500, while Redis is unreachable or stalled', async () => {
    // The cache's own Redis settings (CACHE_REDIS_OPTIONS): no offline queue, so an unreachable Redis
    // fails a command at once, and a short command timeout for one that is connected but silent. What
    // the answer is belongs to the Redis-down challenge (the database's, or a 503 for a cache that does
    // not survive the outage); here every request must be answered, and soon.
    await using proxy = await stallingProxy(
      `redis://${redis.options.host ?? '127.0.0.1'}:${redis.options.port ?? 6379}`,
    );
    const stalled = createRedisClient(`redis://127.0.0.1:${proxy.port}`, CACHE_REDIS_OPTIONS);
    const unreachable = createRedisClient('redis://127.0.0.1:1', CACHE_REDIS_OPTIONS); // nothing listens there
    for (const client of [stalled, unreachable]) {
      client.on('error', () => {}); // reconnection attempts are expected here
      lab.context.onClose(() => client.disconnect());
    }
    if (stalled.status !== 'ready') await once(stalled, 'ready');
    proxy.stall();
    // The bound is generous on purpose: a right cache waits at most its two commands' 250 ms timeouts
    // (nothing at all when Redis refuses), and a busy machine (load average 18) has taken 534 ms to
    // answer a PUT with Redis refused. A cache that waits for Redis to come back, or retries a stalled
    // command again and again, blows through 2 s by a wide margin.
    for (const [fault, client, boundMs] of [
      ['unreachable', unreachable, 2000],
      ['stalled', stalled, 2000],
    ] as const) {
      const url = await createCluster().start({ redis: client, onCacheError: () => {} });
      const answers = [];
      for (const [method, id] of requests(fault === 'unreachable' ? 27 : 28))
        answers.push(await timed(url, method, id));
      const prompt = answers.filter((a) => a.ms < boundMs && a.status !== 500);
      expect(prompt.length, `Redis ${fault}: answered within ${boundMs} ms, not 500: ${JSON.stringify(answers)}`).toBe(
        answers.length,
      );
    }
  });

  it('answers 503 with Retry-After, within a few seconds, while PostgreSQL is down or stalled', async () => {
    // The API's pool settings (DATABASE_POOL_OPTIONS): statement, query and connection timeouts of a
    // few seconds, so a database that does not answer fails a request instead of hanging it; the routes
    // answer that failure with a 503 a client can act on. The users are not cached: only the database
    // could answer.
    const proxy = await stallingProxy(databaseUrl.toString());
    const closedPort = new URL(databaseUrl);
    closedPort.host = '127.0.0.1:1'; // nothing listens there
    const stalled = createPgPool(proxy.url, DATABASE_POOL_OPTIONS);
    const down = createPgPool(closedPort.toString(), DATABASE_POOL_OPTIONS);
    await retried(() => stalled.query('SELECT 1')); // one connection open and idle, as in a running service
    proxy.stall();
    try {
      for (const [fault, faultyPool, id] of [
        ['down', down, 29],
        ['stalled', stalled, 30],
      ] as const) {
        const url = await createCluster().start({ pool: faultyPool });
        const answers = await Promise.all([timed(url, 'GET', id), timed(url, 'PUT', id), timed(url, 'GET', 999_996)]);
        for (const answer of answers) {
          expect(answer, `PostgreSQL ${fault}: ${answer.request}`).toMatchObject({
            status: 503,
            type: expect.stringMatching(PROBLEM),
            retryAfter: String(RETRY_AFTER_SEC),
          });
          expect(answer.ms, `PostgreSQL ${fault}: ${answer.request} answered after ${answer.ms} ms`).toBeLessThan(6000);
        }
      }
    } finally {
      await proxy[Symbol.asyncDispose]();
      await Promise.all([stalled.end(), down.end()]);
    }
  });
  it('PostgreSQL connections reset mid-query under load: every request is answered, nothing is lost, and the API recovers', async () => {
    // Two instances reach the database through a proxy. It is stalled, then 20 clients send cold reads
    // (distinct users and one user all of them want) and writes, so every connection of the pool has a
    // query on it; then the proxy is killed, which resets them all mid-query, and revived. A pg client
    // checked out of a pool has no 'error' listener of the pool's: an error event with none of ours
    // would take the whole process down (vitest reports it as an unhandled error).
    const proxy = await stallingProxy(databaseUrl.toString());
    const faulty = createPgPool(proxy.url, DATABASE_POOL_OPTIONS);
    const inFlight = meterSql(faulty, { keepSent: true });
    try {
      const cluster = createCluster();
      const urls = [await cluster.start({ pool: faulty }), await cluster.start({ pool: faulty })];
      expect((await retried(() => getUser(urls[0]!, 300))).status).toBe(200);
      // Eight connections open and idle, as in a running service: the load's queries go out on them.
      await Promise.all(Array.from({ length: 8 }, () => retried(() => faulty.query('SELECT pg_sleep(0.05)'))));
      proxy.stall();
      inFlight.reset();
      const load = Array.from({ length: 20 }, (_, i) => {
        const url = urls[i % 2]!;
        if (i % 4 === 3) return timed(url, 'PUT', 320 + i); // a user of its own: its last write is its value
        return timed(url, 'GET', i % 2 === 0 ? 301 : 301 + i); // one user everybody wants, and cold ones
      });
      // Every request has reached the pool: queries on the stalled connections, the rest waiting for one.
      await cluster.whenArrived(21);
      // Enough of them on the open connections (a busy machine may take a while to send them all).
      for (let i = 0; i < 1000 && inFlight.sent.length < 8; i++) await new Promise((r) => setTimeout(r, 10));
      expect(inFlight.sent.length, 'queries in flight when the connections are reset').toBeGreaterThanOrEqual(4);
      await proxy.kill();
      const answers = await Promise.all(load);
      const wrong = answers.filter(
        (a) => !(a.status === 200 || (a.status === 503 && a.retryAfter === String(RETRY_AFTER_SEC))),
      );
      expect(wrong, 'answers other than 200 or a 503 with Retry-After while connections were reset').toEqual([]);
      expect(answers.filter((a) => a.status === 503).length, 'requests that met the reset').toBeGreaterThan(0);

      proxy.resume(); // the restarted server answers again (what was held died with its connections)
      await proxy.revive();
      // Recovered: the same instances, the same pool, every user readable, every accepted write kept.
      for (const [i, answer] of answers.entries()) {
        const id = Number(answer.request.split('/').at(-1));
        const read = await retried(() => getUser(urls[i % 2]!, id)); // a new connection may take a few tries
        expect(read.status, `${answer.request} after the database came back`).toBe(200);
        const { rows } = await pool.query<{ name: string; version: number }>(
          'SELECT name, version FROM users WHERE id = $1',
          [id],
        );
        if (answer.request.startsWith('PUT') && answer.status === 200)
          expect(rows[0]?.name, `${answer.request}, answered 200 during the reset`).toBe('Written during a fault');
        expect(read.body, `${answer.request}: what a read answers is what the database holds`).toMatchObject({
          name: rows[0]?.name,
          version: rows[0]?.version,
        });
      }
    } finally {
      inFlight.stop();
      await proxy[Symbol.asyncDispose]();
      await faulty.end();
    }
  });

  it('concurrent cold reads of one user while PostgreSQL is stalled are all a 503 within a few seconds, not one after another', async () => {
    // Readers of a missing entry wait for the one reading the database. When that read fails, the
    // waiters must not take turns at the stalled database (one more timeout each): each request is
    // answered within about two database timeouts, however many wait.
    const proxy = await stallingProxy(databaseUrl.toString());
    const stalled = createPgPool(proxy.url, DATABASE_POOL_OPTIONS);
    await retried(() => stalled.query('SELECT 1'));
    proxy.stall();
    try {
      const cluster = createCluster();
      const urls = [await cluster.start({ pool: stalled }), await cluster.start({ pool: stalled })];
      const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => timed(urls[i % 2]!, 'GET', 310)));
      const late = answers.filter((a) => a.status !== 503 || a.retryAfter !== String(RETRY_AFTER_SEC) || a.ms >= 7000);
      expect(late, '12 concurrent reads of one uncached user, PostgreSQL stalled: not a 503 within 7 s').toEqual([]);
    } finally {
      await proxy[Symbol.asyncDispose]();
      await stalled.end();
    }
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

  it('challenge: a read during a write, before its commit, does not leave the old value cached', async () => {
    // Why a write invalidates after its commit, not before: a read that comes in between the two
    // finds the entry gone, reads the database (the old row: the write has not committed) and stores
    // it. Deleting first only opens that gap; whatever happens before the commit, the write must
    // invalidate once it has committed. The write is held just before its query is sent.
    const cluster = createCluster();
    const write = holdFirstCall('save', 'before');
    const writer = await cluster.start({ wrap: write.wrap });
    const reader = await cluster.start();
    await getUser(reader, 33); // cached: version 1
    const pending = putUser(writer, 33, { name: 'Committed late', email: 'user33@example.com' });
    await write.reached; // the write has begun; it has not reached the database yet
    expect((await getUser(reader, 33)).body).toMatchObject({ version: 1 }); // still the last committed value
    write.release();
    expect((await pending).status).toBe(200);
    for (const url of [writer, reader]) {
      const { body } = await getUser(url, 33);
      expect(
        { name: body.name, version: body.version },
        'a read during the write stored the old row, and nothing removed it after the commit',
      ).toEqual({ name: 'Committed late', version: 2 });
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

  it('challenge: a write that lands between the lease check and the fill does not leave the old value cached', async () => {
    // "Is my lease still there?" and "store the value" must be one step on the server. As two round
    // trips, a write that commits and invalidates between them is missed, and the reader stores what
    // it read before the write. The reader is held before its 1st Redis command after its database
    // read, then (a new reader) before its 2nd, and so on: every gap between its cache commands, each
    // with a whole write run inside it, until a reader sends no more commands.
    for (let n = 1; n <= 8; n++) {
      const id = 50 + n;
      const cluster = createCluster();
      const hold = holdNthCommandAfterRead(n);
      const reader = await cluster.start({ wrap: hold.wrap, redis: hold.instrument(await lab.context.redis()) });
      const writer = await cluster.start();
      const slowRead = getUser(reader, id);
      const held = await Promise.race([hold.reached.then(() => true), slowRead.then(() => false)]);
      if (!held) {
        hold.release();
        break; // this reader sends fewer than n commands after its read: every gap has been tried
      }
      expect((await putUser(writer, id, { name: 'Written mid-fill', email: `user${id}@example.com` })).status).toBe(
        200,
      );
      hold.release();
      await slowRead; // it may answer version 1: it began before the write finished
      for (const url of [reader, writer]) {
        const { body } = await getUser(url, id);
        expect(
          `${body.name}, version ${body.version}`,
          `a whole write (its PUT answered) ran just before the reader's Redis command #${n} after its database read, and the cache kept what the reader had read`,
        ).toBe('Written mid-fill, version 2');
      }
    }
  });

  it("challenge: a reader's late fill that lands between two of a write's Redis commands does not leave the old value cached", async () => {
    // The mirror of the test above: there the reader was held between its cache commands, here the
    // writer is. A write that invalidates in several commands (the entries, then their leases) has a
    // moment when the entry is gone and the lease is still there: a reader that read the row before
    // the commit fills then, its lease check passes, and the old row stays until the TTL. The reader is
    // held once it has read version 1; the writer commits and is held before its 1st Redis command
    // after the commit, and the reader's fill runs there; then (a new pair) before its 2nd, and so on,
    // until a writer sends no more commands (then the fill comes after the whole write).
    for (let n = 1; n <= 6; n++) {
      const id = 160 + n;
      const cluster = createCluster();
      const read = holdFirstCall('find');
      const reader = await cluster.start({ wrap: read.wrap });
      const hold = holdNthCommandAfterRead(n, 'save');
      const writer = await cluster.start({ wrap: hold.wrap, redis: hold.instrument(await lab.context.redis()) });
      const slowRead = getUser(reader, id);
      await read.reached; // the reader holds version 1, not yet stored
      const write = putUser(writer, id, { name: 'Written around a fill', email: `user${id}@example.com` });
      const held = await Promise.race([hold.reached.then(() => true), write.then(() => false)]);
      read.release();
      await slowRead; // its fill runs in the writer's gap (or after the write, once the writer sent fewer)
      hold.release();
      expect((await write).status).toBe(200);
      for (const url of [reader, writer]) {
        const { body } = await getUser(url, id);
        expect(
          `${body.name}, version ${body.version}`,
          held
            ? `a reader that read before a write filled just before the writer's Redis command #${n} after its commit, and the cache kept what it had read`
            : 'a reader that read before a write filled after the write had answered, and the cache kept what it had read',
        ).toBe('Written around a fill, version 2');
      }
      if (!held) break; // this writer sends fewer than n commands after its commit: every gap has been tried
    }
  });

  it('challenge: a reader that reads the database without the lease (it gave up waiting, or Redis failed it) stores nothing older than a write', async () => {
    // The lease guards the fill of the reader that holds it (the race challenges above). A reader can
    // reach the database two other ways: it waited for another reader's fill as long as a lease lasts
    // and gave up, or Redis failed one of its commands. If such a reader then stores what it read, a
    // write that committed between its read and its store must stop it the same way: a plain SET puts
    // back the row the write replaced, until the TTL, and that happens when the database is slow,
    // which is when lease holders overrun and writes pile up.
    //
    // 1. The waiter that gives up. Reader A takes the lease and is held in its database read (its lease
    // lasts 30 s: it does not run out here). Reader C, on an instance whose lease is 300 ms, waits
    // that long for A's fill, gives up, reads the database and is held once it has read. A write then
    // commits and invalidates, and only then do C and A go on.
    const cluster = createCluster();
    const readA = holdFirstCall('find');
    const readC = holdFirstCall('find');
    const a = await cluster.start({ wrap: readA.wrap, leaseMs: 30_000 });
    const c = await cluster.start({ wrap: readC.wrap, leaseMs: 300 });
    const writer = await cluster.start();
    const first = getUser(a, 47);
    await readA.reached; // A holds the lease and version 1, not yet stored
    const third = getUser(c, 47);
    await readC.reached; // C gave up on A's fill and read version 1 itself, not yet stored
    expect((await putUser(writer, 47, { name: 'Written while C read', email: 'user47@example.com' })).status).toBe(200);
    readC.release();
    await third; // it may answer version 1: it began before the write finished
    readA.release();
    await first;
    for (const url of [a, c, writer]) {
      const { body } = await getUser(url, 47);
      expect(
        `${body.name}, version ${body.version}`,
        'reader C read the database while A held the key (a cache with a lease: once C gave up waiting), before a write, and its row was stored after the write',
      ).toBe('Written while C read, version 2');
    }
    // 2. The reader that Redis failed: its 1st Redis command fails (a timeout, a failover), then (a new
    // instance) its 2nd, and so on; it is held once it has read the database, a write commits, and it
    // goes on. Until a read sends fewer commands than that.
    for (let n = 1; n <= 6; n++) {
      const id = 70 + n;
      const failing = failNthCommand(n, await lab.context.redis());
      const read = holdFirstCall('find');
      const next = createCluster();
      const reader = await next.start({ redis: failing.client, wrap: read.wrap, onCacheError: () => {} });
      const other = await next.start();
      const pending = getUser(reader, id);
      const readDatabase = await Promise.race([read.reached.then(() => true), pending.then(() => false)]);
      if (readDatabase) {
        expect((await putUser(other, id, { name: 'Written mid-read', email: `user${id}@example.com` })).status).toBe(
          200,
        );
        read.release();
      }
      await pending;
      const failed = failing.failed();
      if (readDatabase) {
        const { body } = await getUser(other, id);
        expect(
          `${body.name}, version ${body.version}`,
          `a reader whose Redis command #${n} failed read the database before a write, and its row was stored after it`,
        ).toBe('Written mid-read, version 2');
      }
      if (!failed) break; // this read sent fewer than n commands: every step has been tried
    }
  });

  it('challenge: 200 concurrent reads of a cold key, over two instances, cause one database read', async () => {
    // The database read is held until all 200 requests have arrived, so every one of them finds the
    // key cold, however fast the first read would have been. On a busy machine 200 arrivals can take
    // longer than a cache's own lease (the reference's is 3 s): its waiters would then rightly give up
    // and read the database themselves. The lease is lengthened here, so the count measures sharing,
    // never the machine's speed.
    const cluster = createCluster();
    const allArrived = cluster.whenArrived(200);
    const hold = (repository: UserRepository): UserRepository => ({
      ...repository,
      async find(id) {
        await allArrived;
        return repository.find(id);
      },
    });
    const urls = [
      await cluster.start({ wrap: hold, leaseMs: 30_000 }),
      await cluster.start({ wrap: hold, leaseMs: 30_000 }),
    ];
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => getUser(urls[i % 2]!, 22)));
    expect(results.every((r) => r.status === 200 && r.body.id === 22)).toBe(true);
    expect(cluster.reads, `${cluster.reads} database reads for 200 concurrent requests`).toBe(1);
    const misses = results.filter((r) => r.cache === 'miss').length;
    expect(misses, 'answers with X-Cache: miss (a miss is an answer the database gave)').toBe(cluster.reads);
  });

  it("challenge: with the cache's own lease, readers that come while a cold read is as slow as the pool allows wait for it: one database read", async () => {
    // A lease is how long the first reader may keep the others waiting. It must outlive any read the
    // pool lets run (statement_timeout: PostgreSQL cancels a statement after it), or it runs out while
    // the database is merely slow: the next reader takes it and reads too, the first reader's fill is
    // refused, and a slow database gets every request, the stampede the lease is there to stop. The
    // first read is held for the whole of statement_timeout (the clock sets how slow the read is; the
    // count decides), and readers come, over both instances, all through it: a lease even a little
    // shorter than the slowest read lets the last of them read too. A cache that renews its lease
    // while the read runs passes too.
    const statementMs = Number(DATABASE_POOL_OPTIONS.statement_timeout);
    const slowReadMs = statementMs;
    const cluster = createCluster();
    const read = holdFirstCall('find', 'before');
    const urls = [await cluster.start({ wrap: read.wrap }), await cluster.start({ wrap: read.wrap })];
    const first = getUser(urls[0]!, 24);
    await read.reached;
    const heldAt = performance.now();
    const readers: ReturnType<typeof getUser>[] = [];
    for (let i = 0; performance.now() - heldAt < slowReadMs; i++) {
      readers.push(getUser(urls[i % 2]!, 24));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    read.release();
    const results = await Promise.all([first, ...readers]);
    expect(
      results.filter((r) => r.status !== 200 || r.body.id !== 24).map((r) => r.status),
      'answers other than user 24',
    ).toEqual([]);
    expect(
      cluster.reads,
      `${cluster.reads} database reads for ${results.length} readers of one cold user, the first read taking ${slowReadMs} ms (statement_timeout ${statementMs} ms)`,
    ).toBe(1);
  });

  it('challenge: a reader whose lease ran out leaves the lease of the reader that took it next alone', async () => {
    // A lease is its holder's alone, and only while it lasts. Reader A's database read outlasts its
    // lease (a slow query, a GC pause); reader B takes the lease and reads the database in turn. A
    // then fails, or answers late: whatever it does to the lease now (a DEL or a SET without checking
    // its token) takes it from B, and the next reader takes the key again and reads the database too,
    // and the one after it if that read is slow: one more database read per lease, exactly while the
    // database is struggling. Counted: once A is done, ten readers of that user cause no database read
    // of their own, and they are answered with B's fill.
    //
    // The lease can also run out between two of A's Redis commands after its read: a token read with
    // GET and a DEL (or a SET) sent next is two round trips, and B may take the key in between. So A
    // is then held before its 1st Redis command after its read, its lease is made to run out there (it
    // is deleted, as its expiry would) and B takes the key; then (a new A) before its 2nd, and so on,
    // until A sends no more commands.
    const closedPort = new URL(databaseUrl);
    closedPort.host = '127.0.0.1:1'; // nothing listens there: every query fails at once
    const down = createPgPool(closedPort.toString(), DATABASE_POOL_OPTIONS);
    /**
     * A's lease runs out during its read (`gap` undefined) or just before its Redis command #gap after
     * its read; B takes the key, ten readers come. False when A sent fewer than `gap` commands.
     */
    async function leaseTakenFromA(outcome: 'fails' | 'answers late', id: number, gap?: number): Promise<boolean> {
      const cluster = createCluster();
      const pool = outcome === 'fails' ? { pool: down } : {};
      const readB = holdFirstCall('find');
      const b = await cluster.start({ wrap: readB.wrap, leaseMs: 30_000 });
      const readersRedis = await lab.context.redis();
      const commands = vi.spyOn(readersRedis, 'sendCommand');
      const readers = await cluster.start({ redis: readersRedis, leaseMs: 30_000 });
      let first: Promise<{ status: number }>;
      let second: Promise<{ status: number; body: Record<string, unknown> }>;
      let releaseA: () => void;
      if (gap === undefined) {
        // A's lease lasts 200 ms and its read is held before its query for longer; B's lease lasts 30 s.
        const readA = holdFirstCall('find', 'before');
        const a = await cluster.start({ wrap: readA.wrap, leaseMs: 200, ...pool });
        first = getUser(a, id);
        await readA.reached; // A took the lease; its read is held
        second = getUser(b, id);
        await readB.reached; // B took the lease once A's ran out, and has read the database
        releaseA = readA.release;
      } else {
        const hold = holdNthCommandAfterRead(gap);
        const redisA = hold.instrument(await lab.context.redis());
        const a = await cluster.start({ wrap: hold.wrap, redis: redisA, leaseMs: 30_000, ...pool });
        first = getUser(a, id);
        if (!(await Promise.race([hold.reached.then(() => true), first.then(() => false)]))) {
          hold.release();
          return false;
        }
        // A's lease runs out here: all this cold user has in Redis is A's lease, and it goes.
        const leased = await redis.keys(`${cluster.prefix}*`);
        if (leased.length > 0) await redis.del(...leased);
        second = getUser(b, id);
        await readB.reached; // B took the lease, and has read the database
        releaseA = hold.release;
      }
      const when = gap === undefined ? 'during its read' : `before its Redis command #${gap} after its read`;
      releaseA();
      expect((await first).status, `A, whose read ${outcome}, its lease run out ${when}`).toBe(
        outcome === 'fails' ? 503 : 200,
      );
      const readsBefore = cluster.reads;
      let answered = 0;
      const later = Array.from({ length: 10 }, () =>
        getUser(readers, id).then((answer) => {
          answered += 1;
          return answer;
        }),
      );
      try {
        // Every reader has asked Redis at least twice (a read, then a lease it did not get), or one of
        // them has already been answered (it took the key and read the database itself).
        await until(async () => answered > 0 || commands.mock.calls.length >= 20, 'the ten readers to look');
        await readersRedis.ping(); // answered once Redis has run every command sent before it
      } finally {
        readB.release();
      }
      expect((await second).status).toBe(200);
      const answers = await Promise.all(later);
      expect(answers.map((r) => r.status)).toEqual(Array.from({ length: 10 }, () => 200));
      expect(
        cluster.reads - readsBefore,
        `database reads by ten readers while B was reading the user, after A's read ${outcome} (its lease run out ${when})`,
      ).toBe(0);
      expect((await getUser(readers, id)).cache, "the next read, after B's fill").toBe('hit');
      return true;
    }
    try {
      await leaseTakenFromA('fails', 48);
      await leaseTakenFromA('answers late', 49);
      for (const [outcome, firstId] of [
        ['fails', 91],
        ['answers late', 95],
      ] as const) {
        for (let gap = 1; gap <= 4; gap++) if (!(await leaseTakenFromA(outcome, firstId + gap - 1, gap))) break;
      }
    } finally {
      await down.end();
    }
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
    // A reader of either deployment may be in its database read when an instance of the other one
    // writes: the write must stop that reader's fill as it stops its own version's (its lease goes with
    // its entry), or the reader stores the row from before the write after the write has answered, and
    // its deployment serves it until the TTL. The reader is held once it has read version 1.
    for (const [readerVersion, writer, id] of [
      [CURRENT_SCHEMA_VERSION - 1, after, 39],
      [CURRENT_SCHEMA_VERSION, before, 40],
    ] as const) {
      const read = holdFirstCall('find');
      const reader = await cluster.start({ schemaVersion: readerVersion, wrap: read.wrap });
      const name = `Written by v${writer === after ? CURRENT_SCHEMA_VERSION : CURRENT_SCHEMA_VERSION - 1}`;
      const pending = getUser(reader, id);
      await read.reached; // the reader holds version 1, not yet stored
      expect((await putUser(writer, id, { name, email: `user${id}@example.com` })).status).toBe(200);
      read.release();
      await pending; // it may answer version 1: it began before the write finished
      const { body } = await getUser(reader, id);
      expect(
        `${body.name}, version ${body.version}`,
        `a v${readerVersion} reader that read before a write by the other deployment stored its row after the write`,
      ).toBe(`${name}, version 2`);
    }
  });

  it('challenge: repeated reads of a missing id reach the database once', async () => {
    const cluster = createCluster();
    const url = await cluster.start();
    for (let i = 0; i < 20; i++) expect((await getUser(url, 777_777)).status).toBe(404);
    expect(cluster.reads, `${cluster.reads} database reads for 20 requests for the same missing id`).toBe(1);
  });

  it('challenge: with Redis down, reads and writes are answered from the database, the failures reported, and no failed invalidation retried past the TTL', async () => {
    // Two outages: the instance's connection was closed, and Redis was never reachable (a client with
    // the cache's own settings, pointed at a port where nothing listens).
    const unreachable = createRedisClient('redis://127.0.0.1:1', CACHE_REDIS_OPTIONS);
    unreachable.on('error', () => {}); // reconnection attempts are expected here
    lab.context.onClose(() => unreachable.disconnect());
    for (const [outage, id] of [
      ['connection closed', 25],
      ['unreachable', 24],
    ] as const) {
      const cluster = createCluster();
      const failures: Error[] = [];
      // The instance's connection, its commands counted; once the write has committed, the spec's clock.
      const connection = outage === 'unreachable' ? unreachable : await lab.context.redis();
      const commands = vi.spyOn(connection, 'sendCommand');
      const clock = fakeClockOnceSaved();
      const url = await cluster.start({
        redis: connection,
        ...(outage === 'unreachable' ? {} : { redisDown: true, wrap: clock.wrap }),
        onCacheError: (error) => failures.push(error),
      });
      expect(await getUser(url, id), `a read while Redis is down (${outage})`).toMatchObject({
        status: 200,
        cache: 'miss',
        body: { id, name: `User ${id}`, version: 1 },
      });
      expect((await getUser(url, 999_998)).status).toBe(404);
      try {
        expect(await putUser(url, id, { name: 'Written without Redis', email: `user${id}@example.com` })).toMatchObject(
          { status: 200, body: { version: 2 } },
        );
        // The write's DEL failed, and the write stands. What may it leave running? Past the TTL, no
        // entry it could have made stale is left, so a retry of its DEL is of no use; before it, a
        // retry helps only once Redis is back, and each failed write of an outage adds its retries to
        // all the others'. A DEL retried every second until Redis takes it is thousands of timers and
        // commands a second during a long outage, and a burst of DELs when Redis returns. On the
        // spec's clock, a TTL and then a day pass with Redis still down: a few retries, at most,
        // and none once the TTL is over.
        if (outage === 'connection closed') {
          const ttlMs = 60_000; // the instance's (createCluster's default)
          const answered = commands.mock.calls.length;
          const sentSince = () => commands.mock.calls.slice(answered).map(([command]) => command.name);
          await vi.advanceTimersByTimeAsync(ttlMs);
          const withinTtl = sentSince().length;
          expect(
            withinTtl,
            `Redis commands sent within the TTL (60 s) after a write whose invalidation failed: ${sentSince().slice(0, 5)}...`,
          ).toBeLessThanOrEqual(10);
          let waited = ttlMs;
          for (let step = ttlMs; waited < 86_400_000 && sentSince().length === withinTtl; step *= 2) {
            await vi.advanceTimersByTimeAsync(step);
            waited += step;
          }
          expect(
            sentSince().slice(withinTtl),
            `Redis commands sent between 60 s (the TTL) and ${waited / 1000} s after a write whose invalidation failed`,
          ).toEqual([]);
        }
      } finally {
        clock.restore();
      }
      expect(await getUser(url, id)).toMatchObject({
        status: 200,
        body: { name: 'Written without Redis', version: 2 },
      });
      expect(failures.length, `Redis failures passed to onCacheError (${outage})`).toBeGreaterThanOrEqual(4);
    }
    // And Redis failing one command of a read at a time (a timeout, a failover in the middle): the
    // 1st command of a cold read fails, then (a new instance) its 2nd, and so on, until a read sends
    // no more commands than that.
    for (let n = 1; n <= 6; n++) {
      const id = 60 + n;
      const cluster = createCluster();
      const failures: Error[] = [];
      const failing = failNthCommand(n, await lab.context.redis());
      const url = await cluster.start({ redis: failing.client, onCacheError: (error) => failures.push(error) });
      const read = await getUser(url, id);
      if (!failing.failed()) break; // this read sent fewer than n commands: every step has been tried
      expect(read, `a cold read whose Redis command #${n} failed`).toMatchObject({
        status: 200,
        body: { id, name: `User ${id}` },
      });
      expect(failures.length, `the failure of Redis command #${n}, passed to onCacheError`).toBeGreaterThanOrEqual(1);
    }
  });

  it('challenge: entries filled at the same moment do not all expire at the same moment', async () => {
    const cluster = createCluster();
    const url = await cluster.start({ ttlMs: 60_000 });
    await Promise.all(Array.from({ length: 40 }, (_, i) => getUser(url, 100 + i)));
    const ttls = await cluster.ttls();
    const spread = Math.max(...ttls) - Math.min(...ttls);
    expect(spread, `40 entries filled together expire within ${spread} ms of each other`).toBeGreaterThanOrEqual(3000);
    // Jitter spreads expiries; it must not throw entries away: each lives at least half of ttlMs.
    expect(Math.min(...ttls), 'the shortest TTL of 40 entries filled with a TTL of 60 s').toBeGreaterThanOrEqual(
      30_000,
    );
  });

  it('challenge: a write whose answer is lost with its connection (committed, then cut) leaves no old value cached', async () => {
    // The write's statement reaches PostgreSQL and commits, and the connection is cut before the answer
    // comes back: the API cannot know whether it committed (a 503), but the row is new, and the cache
    // must not go on serving the old one. A row lock holds the statement in PostgreSQL until the proxy
    // is stalled; the timeouts are the pool's, lifted, so that only the cut ends the wait.
    const proxy = await stallingProxy(databaseUrl.toString());
    const faulty = createPgPool(proxy.url, { ...DATABASE_POOL_OPTIONS, statement_timeout: 0, query_timeout: 30_000 });
    const locker = await pool.connect();
    try {
      const cluster = createCluster();
      const writer = await cluster.start({ pool: faulty });
      const reader = await cluster.start();
      expect((await getUser(reader, 34)).body).toMatchObject({ version: 1 }); // cached
      await locker.query('BEGIN');
      await locker.query('SELECT 1 FROM users WHERE id = 34 FOR UPDATE');
      const write = timed(writer, 'PUT', 34);
      await until(async () => {
        const { rows } = await pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database()
           AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO users%'`,
        );
        return rows[0]?.n === 1;
      }, 'the write to wait for the row lock');
      proxy.stall(); // the write is in PostgreSQL; its answer will not come back
      await locker.query('COMMIT');
      await until(async () => {
        const { rows } = await pool.query<{ version: number }>('SELECT version FROM users WHERE id = 34');
        return rows[0]?.version === 2;
      }, 'the write to commit');
      await proxy.kill();
      expect((await write).status, 'the write, its connection cut before its answer').toBe(503);
      expect(
        (await getUser(reader, 34)).body,
        'a read once the write has committed and its 503 was sent',
      ).toMatchObject({ name: 'Written during a fault', version: 2 });
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      locker.release();
      await proxy[Symbol.asyncDispose]();
      await faulty.end();
    }
  });

  it('challenge: a read that starts after a write has answered sees it, however late the write reaches Redis', async () => {
    // The writer's cache commands are held once its write has committed. A PUT that answers before its
    // invalidation has reached Redis (a DEL not awaited, "fire and forget") lets a read that starts after
    // that answer, on another instance, find the old entry still there. Twice: a write answered 200, and
    // a write whose answer was lost after its commit (a 503: it invalidates all the same, and a 503
    // sent before that invalidation has landed is the same early answer on the error path).
    for (const [outcome, id, status] of [
      ['committed and answered', 36, 200],
      ['committed, its answer lost', 35, 503],
    ] as const) {
      const cluster = createCluster();
      const hold = holdCommandsAfterSave(status === 503);
      const writer = await cluster.start({ wrap: hold.wrap, redis: hold.instrument(await lab.context.redis()) });
      const reader = await cluster.start();
      expect((await getUser(reader, id)).body).toMatchObject({ version: 1 }); // cached
      const write = putUser(writer, id, { name: 'Written slowly', email: `user${id}@example.com` });
      const answered = await Promise.race([
        write.then(() => true),
        hold.reached.then(() => new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 1500))),
      ]);
      try {
        if (answered) {
          expect((await write).status, `the write (${outcome})`).toBe(status);
          const { body } = await getUser(reader, id);
          expect(
            `${body.name}, version ${body.version}`,
            `a read that began after the PUT answered (${outcome}), while the writer had not yet reached Redis`,
          ).toBe('Written slowly, version 2');
        }
      } finally {
        hold.release();
      }
      expect((await write).status, `the write (${outcome})`).toBe(status);
    }
  });

  it('challenge: an entry that does not decode is a miss: reported, answered from the database and replaced', async () => {
    // A truncated value, one written by other code or by hand: a cache that trusts it answers 500 for
    // as long as the entry lives. What is in Redis under this user is overwritten with broken JSON.
    const cluster = createCluster();
    const failures: Error[] = [];
    const url = await cluster.start({ onCacheError: (error) => failures.push(error) });
    expect((await getUser(url, 37)).status).toBe(200);
    expect(failures, 'failures reported for a plain miss and its fill').toEqual([]);
    // Broken JSON, and JSON that is not a user.
    for (const [round, corrupt] of ['{"id":37,"name":"Us', '{"name":"User 37"}'].entries()) {
      const keys = await redis.keys(`${cluster.prefix}*`);
      expect(keys.length, 'keys under the prefix once user 37 was read').toBeGreaterThan(0);
      for (const key of keys) await redis.set(key, corrupt, 'KEEPTTL');
      expect(await getUser(url, 37), `a read of the entry ${corrupt}`).toMatchObject({
        status: 200,
        body: { id: 37, name: 'User 37', version: 1 },
      });
      expect(failures.length, `corrupt entries reported to onCacheError (${corrupt})`).toBeGreaterThanOrEqual(
        round + 1,
      );
      expect(await getUser(url, 37), 'the next read').toMatchObject({ status: 200, cache: 'hit', body: { id: 37 } });
      expect(cluster.reads, 'database reads: the first fill and one per corrupt entry replaced').toBe(2 + round);
    }
    // And a Redis failure on any command of a read that meets a corrupt entry (its DEL included) is
    // handled as on a cold read: answered from the database, reported. A command sent and not awaited
    // ("fire and forget") has nobody to hear it fail: its rejection is unhandled, and an unhandled
    // rejection ends a Node process, every request in flight with it. Command #n of such a read fails,
    // for each n in turn (a new instance each time), until a read sends fewer.
    for (let n = 1; n <= 6; n++) {
      const id = 140 + n;
      const next = createCluster();
      expect((await getUser(await next.start(), id)).status, `user ${id}, read in`).toBe(200);
      for (const key of await redis.keys(`${next.prefix}*`)) await redis.set(key, '{"id":', 'KEEPTTL');
      const reported: Error[] = [];
      const failing = failNthCommand(n, await lab.context.redis());
      const url = await next.start({ redis: failing.client, onCacheError: (error) => reported.push(error) });
      expect(await getUser(url, id), `a read of a corrupt entry whose Redis command #${n} failed`).toMatchObject({
        status: 200,
        body: { id, name: `User ${id}` },
      });
      expectNoProcessDied(); // an unhandled rejection: "this test process left a promise rejection unhandled"
      if (!failing.failed()) break; // this read sent fewer than n commands: every step has been tried
      expect(reported.length, `failures reported by a read whose Redis command #${n} failed`).toBeGreaterThan(0);
    }
  });
});
