/**
 * The n-plus-one spec. Baseline tests: the page is right, field for field (its times in UTC whatever the
 * session's time zone), and the pages together list every author once, in id order, whatever order the
 * table keeps its rows in; PostgreSQL returns only the rows a page shows, through SQL whose text does
 * not change with the page; every pool client taken is given back; bad input is a 400 problem; a
 * stalled or dead database is a prompt 503. The
 * `challenge:` tests count the SQL statements each request makes PostgreSQL run, measured on the real
 * pg pool from outside (the lab kit's meterSql), and ask PostgreSQL how it finds the posts (EXPLAIN): the
 * starter's 1 + N statements, each reading the whole posts table, fail them.
 */
import { isDeepStrictEqual } from 'node:util';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import * as feed from '#author-feed';
import { ensureIndexes } from '#author-feed';
import { meterSql, type SentSql } from '@labs/lab-kit';
import { createPgPool, resolveService } from '@labs/services';
import { stallingProxy, useLab } from '@labs/test-kit';
import {
  type AuthorsPage,
  DEFAULT_LIMIT,
  type FeedLoader,
  MAX_AUTHOR_ID,
  MAX_LIMIT,
  RETRY_AFTER_SEC,
} from '../server/app.ts';
import {
  LATEST_POSTS,
  type Author,
  type AuthorWithPosts,
  type PageRequest,
  type Post,
  type PostRow,
} from '../server/author-repository.ts';
import { APP_POOL_OPTIONS, seed } from '../server/database.ts';
import nPlusOneLab from '../server/lab.ts';

/** Small enough to seed in a blink, big enough for a page of 100; authors 13, 26, ... have no posts. */
const AUTHORS = 240;

// The lab as `lab serve` starts it, on this file's own database (dropped when the file ends), seeded
// here with a small dataset and indexed by the exercise's own ensureIndexes (the starter's makes none);
// the app queries the same pool the meter watches. That pool waits up to 5 s for a free connection (the
// kit's default) rather than the API's 2 s: the starter's 408 statements at once, on a busy machine or
// the embedded engine, must fail the count challenge by their count, not by a 503. The fault tests
// below build the API on APP_POOL_OPTIONS themselves.
// The test kit closes it after the file and checks its invariants after each test (this API hands out
// no credentials, so there is nothing to find in its database; the check runs all the same).
const lab = await useLab(nPlusOneLab);
const db = await lab.context.database();
await seed(db, { authors: AUTHORS, maxPostsPerAuthor: 12 });
await indexAsAtStartUp();
const sql = meterSql(db, { keepSent: true });
const { app } = await nPlusOneLab.build(lab.context, { db });
const server = await lab.context.listen(app);

/**
 * The exercise's ensureIndexes, run as `lab serve` runs it: on a set-up pool of its own, ended once the
 * indexes are built. Ending is bounded, so a set-up that keeps a client checked out fails the baseline
 * that counts them, not the file's teardown (pool.end() waits for every client it lent).
 */
async function indexAsAtStartUp(): Promise<void> {
  const setup = createPgPool(db.options.connectionString!, { max: 1 });
  try {
    await ensureIndexes(setup);
  } finally {
    await endWithin2s(setup);
  }
}

/** Ends `pool`, waiting at most 2 s for the clients it lent: one never given back must not hang the file. */
async function endWithin2s(pool: pg.Pool): Promise<void> {
  await Promise.race([pool.end(), new Promise((resolve) => setTimeout(resolve, 2000))]).catch(() => undefined);
}

/** Clients of `pool` lent out and not given back yet. */
function checkedOut(pool: pg.Pool): number {
  return pool.totalCount - pool.idleCount;
}

/**
 * A pool whose sessions may not scan an index (index and index-only scans switched off), for `use`,
 * ended afterwards. PostgreSQL then reads a table in the order it keeps its rows (a Seq Scan, a Bitmap
 * Heap Scan) and sorts only what an ORDER BY asks it to: an order the SQL leaves to an index shows.
 */
async function withoutIndexScans<T>(use: (pool: pg.Pool) => Promise<T>): Promise<T> {
  const pool = createPgPool(db.options.connectionString!, { max: 2 });
  pool.on('connect', (client) => {
    client.query('SET enable_indexscan = off').catch(() => undefined);
    client.query('SET enable_indexonlyscan = off').catch(() => undefined);
  });
  try {
    return await use(pool);
  } finally {
    // On the embedded engine every connection is one session: the settings must not outlive their use.
    await pool.query('RESET enable_indexscan; RESET enable_indexonlyscan').catch(() => undefined);
    await endWithin2s(pool);
  }
}

/** The API built on `pool` (the exercise's loadAuthorFeed), listening until the file ends: its base URL. */
async function apiOn(pool: pg.Pool): Promise<string> {
  return (await lab.context.listen((await nPlusOneLab.build(lab.context, { db: pool })).app)).url;
}

/** One request's answer and what it cost PostgreSQL. */
interface Measured {
  status: number;
  body: unknown;
  /** Statements PostgreSQL executed (a string holding several counts each one). */
  statements: number;
  /** Rows PostgreSQL sent back. */
  rows: number;
  sent: readonly SentSql[];
}

/** GET /api/authors with `query`; returns the status, the body and what it cost PostgreSQL. */
async function getAuthors(query: string): Promise<Measured> {
  sql.reset();
  const res = await fetch(`${server.url}/api/authors${query}`);
  const body: unknown = await res.json();
  return { status: res.status, body, statements: sql.statements, rows: sql.rows, sent: sql.sent };
}

/**
 * The expected page, built a way neither version builds it: the page's authors, then every post of
 * theirs, ranked and cut in JavaScript. (Fine for a test on about 1,400 posts; it is what the spec's row
 * count forbids the code under test to do.)
 */
async function expectedPage(page: PageRequest): Promise<AuthorsPage> {
  const { rows: authorRows } = await db.query<Author>(
    'SELECT id, name FROM authors WHERE id > $1 ORDER BY id LIMIT $2',
    [page.after, page.limit],
  );
  const { rows: postRows } = await db.query<PostRow & { author_id: number }>(
    'SELECT author_id, id, title, published_at FROM posts WHERE author_id = ANY($1::int[])',
    [authorRows.map((a) => a.id)],
  );
  const newestFirst = (a: PostRow, b: PostRow) =>
    b.published_at.getTime() - a.published_at.getTime() || Number(b.id) - Number(a.id);
  const authors: AuthorWithPosts[] = authorRows.map((author) => ({
    id: author.id,
    name: author.name,
    latestPosts: postRows
      .filter((p) => p.author_id === author.id)
      .sort(newestFirst)
      .slice(0, LATEST_POSTS)
      .map((p) => ({ id: Number(p.id), title: p.title, publishedAt: p.published_at.toISOString() })),
  }));
  const last = authors.at(-1);
  return { authors, nextAfter: last && authors.length === page.limit ? last.id : null };
}

/**
 * The README's other fix, written here rather than imported from solution/ (the spec judges the
 * reference, so it must not lean on it): the whole page in one statement, each author's newest posts
 * read by a LATERAL subquery and folded into one JSON array per author by json_agg.
 */
async function pageInOneQuery(pool: pg.Pool, page: PageRequest): Promise<AuthorWithPosts[]> {
  const { rows } = await pool.query<{ id: number; name: string; latest_posts: Post[] }>(
    `SELECT a.id, a.name, coalesce(latest.posts, '[]'::json) AS latest_posts
     FROM authors a
     CROSS JOIN LATERAL (
       SELECT json_agg(json_build_object(
                'id', newest.id,
                'title', newest.title,
                'publishedAt', to_char(newest.published_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
              ) ORDER BY newest.published_at DESC, newest.id DESC) AS posts
       FROM (SELECT id, title, published_at FROM posts
             WHERE author_id = a.id
             ORDER BY published_at DESC, id DESC
             LIMIT $3) newest
     ) latest
     WHERE a.id > $1
     ORDER BY a.id
     LIMIT $2`,
    [page.after, page.limit, LATEST_POSTS],
  );
  return rows.map((row) => ({ id: row.id, name: row.name, latestPosts: row.latest_posts }));
}

/** Pages with empty, short, full and missing post lists, an empty page, and pages at and past the end. */
const PAGES: { query: string; what: string; page: PageRequest }[] = [
  { query: '?limit=0', what: 'an empty page', page: { limit: 0, after: 0 } },
  { query: '?limit=1', what: 'one author', page: { limit: 1, after: 0 } },
  { query: '?limit=10&after=5', what: 'ten authors after #5', page: { limit: 10, after: 5 } },
  { query: '?limit=100', what: 'the largest page', page: { limit: 100, after: 0 } },
  { query: '', what: `the default page of ${DEFAULT_LIMIT}`, page: { limit: DEFAULT_LIMIT, after: 0 } },
  { query: `?limit=50&after=${AUTHORS - 20}`, what: 'a short last page', page: { limit: 50, after: AUTHORS - 20 } },
  { query: `?limit=10&after=${AUTHORS}`, what: 'a page past the end', page: { limit: 10, after: AUTHORS } },
];

describe('baseline: the feed is right, whatever loads it', () => {
  it.for(PAGES.map((p) => [`${p.what} (GET /api/authors${p.query})`, p] as const))(
    '%s: the expected page, field for field',
    async ([, { query, page }]) => {
      const { status, body } = await getAuthors(query);
      expect(status).toBe(200);
      expect(body).toEqual(await expectedPage(page));
    },
  );

  it('pages walked by their cursor cover every author exactly once, in id order, through each loader, whatever order the table keeps its rows in', async () => {
    // `nextAfter` is the last id of a page, and the next page starts above it: an author a page leaves
    // out whose id is below that is skipped by every later page, for good. Only `ORDER BY a.id` makes
    // a page the lowest ids above the cursor; without it the rows come in the order the plan meets them:
    // the table's (a Seq Scan), a hash's, an index's while the planner happens to use that index. Freshly
    // seeded, the table keeps them in id order, which hides the missing ORDER BY. An UPDATE writes a
    // row's new version where there is room, further on in the table, as a table in use does all day:
    // a few authors written back unchanged move out of id order. Each loader then walks every page, on
    // the plan PostgreSQL picks and on sessions that may not scan an index (so the authors come as
    // stored unless the SQL sorts them).
    const moved = [3, 7, 50, 120];
    await db.query('UPDATE authors SET name = name WHERE id = ANY($1::int[])', [moved]);
    const { rows: stored } = await db.query<{ id: number }>('SELECT id FROM authors ORDER BY ctid');
    const storedOrder = stored.map((r) => r.id);
    expect(
      storedOrder.filter((id, i) => i > 0 && id < storedOrder[i - 1]!).length,
      'authors the UPDATE moved out of id order in the table (each one after a higher id)',
    ).toBeGreaterThan(0);
    const everyAuthor = Array.from({ length: AUTHORS }, (_, i) => i + 1);
    const offered = (feed as { loadAuthorFeedInOneQuery?: FeedLoader }).loadAuthorFeedInOneQuery;
    const problems: string[] = [];
    await withoutIndexScans(async (storedOrderPool) => {
      for (const [plan, pool] of [
        ['the plan PostgreSQL picks', db],
        ['index scans switched off', storedOrderPool],
      ] as const) {
        const apiUrl = pool === db ? server.url : await apiOn(pool);
        const loaders: [string, (page: PageRequest) => Promise<AuthorWithPosts[]>][] = [
          [
            'GET /api/authors',
            async ({ limit, after }) => {
              const res = await fetch(`${apiUrl}/api/authors?limit=${limit}&after=${after}`);
              expect(res.status, `GET /api/authors?limit=${limit}&after=${after} (${plan})`).toBe(200);
              return ((await res.json()) as AuthorsPage).authors;
            },
          ],
          ["the spec's single query", (page) => pageInOneQuery(pool, page)],
        ];
        if (offered) loaders.push(["the exercise's loadAuthorFeedInOneQuery", (page) => offered(pool, page)]);
        for (const [whose, load] of loaders)
          for (const limit of [10, MAX_LIMIT]) {
            // As the API pages: the cursor is the last id of a full page; a short page is the last.
            const seen: number[] = [];
            for (let after = 0, pages = 0; pages <= AUTHORS; pages++) {
              const authors = await load({ limit, after });
              seen.push(...authors.map((a) => a.id));
              if (authors.length < limit) break;
              after = authors.at(-1)!.id;
            }
            if (isDeepStrictEqual(seen, everyAuthor)) continue;
            const missing = everyAuthor.filter((id) => !seen.includes(id));
            const repeated = seen.filter((id, i) => seen.indexOf(id) !== i);
            const outOfOrder = seen.filter((id, i) => i > 0 && id < seen[i - 1]!);
            problems.push(
              `${whose} (${plan}), pages of ${limit}: ${seen.length} authors seen of ${AUTHORS}; missing [${missing.join(', ')}], seen twice [${repeated.join(', ')}], after a higher id [${outOfOrder.join(', ')}]`,
            );
          }
      }
    });
    expect(
      problems,
      `authors ${moved.join(', ')} were moved in the table: a page must still be the lowest ids above its cursor (ORDER BY a.id), or the cursor skips what it left out`,
    ).toEqual([]);
  });

  it('the dataset has the edge cases: authors with no posts, with fewer than a page shows, with more', async () => {
    const { authors } = await expectedPage({ limit: 30, after: 0 });
    const sizes = new Set(authors.map((a) => a.latestPosts.length));
    expect([...sizes].sort()).toEqual([0, 1, 2, 3]);
  });

  it.each([
    ['?limit=-1', 'limit'],
    ['?limit=abc', 'limit'],
    ['?limit=2.5', 'limit'],
    ['?limit=', 'limit'],
    [`?limit=${MAX_LIMIT + 1}`, 'limit'],
    ['?limit=1e3', 'limit'],
    ['?limit=1&limit=2', 'limit'],
    ['?after=-5', 'after'],
    ['?after=five', 'after'],
    ['?after=2147483648', 'after'],
  ])('GET /api/authors%s is a 400 that says what is wrong with %s', async (query, param) => {
    sql.reset();
    const res = await fetch(`${server.url}/api/authors${query}`);
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const max = param === 'limit' ? MAX_LIMIT : MAX_AUTHOR_ID;
    const problem = (await res.json()) as { status: number; title: string; detail: string; errors: string[] };
    expect(problem).toMatchObject({ status: 400, title: 'Bad Request' });
    expect(problem.detail).toContain(`${param}: must be a whole number from 0 to ${max}, got `);
    expect(problem.errors).toEqual([problem.detail]); // one issue: only the bad parameter is named
    expect(sql.statements).toBe(0); // rejected before any SQL
  });

  it('index set-up runs twice: a second run succeeds and leaves the indexes on posts as they were', async () => {
    // ensureIndexes runs on every start of every instance (a deploy starts several at once), so a
    // second run must be a no-op: not an error ("already exists"), not a second copy of the index
    // (one more to write on every INSERT), not a rebuild (which blocks writes to posts while it runs).
    // The file's set-up ran it once already; two more runs must change nothing, down to each index's oid.
    const indexesOnPosts = async () =>
      (
        await db.query<{ oid: number; definition: string }>(
          `SELECT c.oid::int AS oid, pg_get_indexdef(c.oid) AS definition FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'posts'::regclass ORDER BY c.oid`,
        )
      ).rows;
    const before = await indexesOnPosts();
    for (const run of [2, 3]) {
      await expect(ensureIndexes(db), `run ${run} of ensureIndexes`).resolves.toBeUndefined();
      expect(await indexesOnPosts(), `the indexes on posts after run ${run} of ensureIndexes`).toEqual(before);
    }
  });

  it('every client the exercise takes from its pool goes back to it: after ensureIndexes, and after pages from each of its loaders', async () => {
    // A client checked out with pool.connect() stays lent until release() is called, whatever happens
    // to the work it was taken for. One never given back is an open connection the pool can no longer
    // use, and its end() (a graceful shutdown) waits for it for ever; a few such paths per request and
    // the pool runs dry, and every request waits for a connection and fails. pool.query() gives the
    // client back by itself; a client taken by hand is given back in `finally`. Counted on a pool of the
    // test's own, so every client lent is the exercise's.
    const pool = createPgPool(db.options.connectionString!, { max: 3 });
    const offered = (feed as { loadAuthorFeedInOneQuery?: FeedLoader }).loadAuthorFeedInOneQuery;
    const loaders: [string, FeedLoader][] = [['loadAuthorFeed', feed.loadAuthorFeed]];
    if (offered) loaders.push(['loadAuthorFeedInOneQuery', offered]);
    try {
      await ensureIndexes(pool);
      expect(checkedOut(pool), 'clients still checked out of the pool once ensureIndexes resolved').toBe(0);
      for (const [name, load] of loaders)
        for (const { page, query } of PAGES) {
          expect(await load(pool, page), `${name}, ${query}`).toEqual((await expectedPage(page)).authors);
          expect(checkedOut(pool), `clients still checked out of the pool once ${name} served ${query}`).toBe(0);
        }
    } finally {
      await endWithin2s(pool);
    }
  });

  it('the pool is left as the exercise found it: no setting, transaction or listener outlives ensureIndexes or a page', async () => {
    // A pooled connection outlives the call that used it: the next request, any request, gets it as it
    // was left. A plain SET (statement_timeout = 0 for a long index build, enable_seqscan = off to force
    // a plan) stays on that session for good, so later queries run without the API's bounds, or with
    // plans nobody chose; a transaction left open holds its locks and snapshot. An 'error' listener
    // added each time a client is checked out piles up on a client that is lent again and again. One
    // connection here, so every call reuses it and whatever one leaves the next one finds.
    const pool = createPgPool(db.options.connectionString!, { max: 1 });
    const clients: pg.PoolClient[] = [];
    pool.on('connect', (client) => clients.push(client as pg.PoolClient));
    const listeners = (emitter: NodeJS.EventEmitter) =>
      Object.fromEntries(emitter.eventNames().map((event) => [String(event), emitter.listenerCount(event)]));
    /** The session's own settings, and a transaction it sits in, as the next user of the connection finds them. */
    const session = async () => {
      const { rows } = await pool.query<{ settings: string[]; in_transaction: boolean }>(
        `SELECT array(SELECT name || ' = ' || setting FROM pg_settings WHERE source = 'session' ORDER BY name) AS settings,
                transaction_timestamp() <> statement_timestamp() AS in_transaction`,
      );
      return [...rows[0]!.settings, ...(rows[0]!.in_transaction ? ['a transaction left open'] : [])];
    };
    const offered = (feed as { loadAuthorFeedInOneQuery?: FeedLoader }).loadAuthorFeedInOneQuery;
    const loaders: [string, FeedLoader][] = [['loadAuthorFeed', feed.loadAuthorFeed]];
    if (offered) loaders.push(['loadAuthorFeedInOneQuery', offered]);
    try {
      const before = await session();
      const [client] = clients;
      const clientListeners = listeners(client!);
      const poolListeners = listeners(pool);
      await ensureIndexes(pool);
      for (const [, load] of loaders) for (const { page } of [...PAGES, ...PAGES]) await load(pool, page);
      expect(await session(), 'the pooled session after ensureIndexes and pages from each loader').toEqual(before);
      expect(listeners(pool), 'listeners on the pool after ensureIndexes and the pages').toEqual(poolListeners);
      for (const lent of clients)
        expect(listeners(lent), 'listeners on a pooled client once it is idle again').toEqual(clientListeners);
    } finally {
      await endWithin2s(pool);
    }
  });

  it('index set-up resolves only once PostgreSQL has done it: held up by a write to posts, it waits', async ({
    skip,
  }) => {
    // Start-up awaits ensureIndexes before it takes traffic. One that sends its CREATE INDEX and
    // resolves without waiting for it lets the API serve feed queries with no index (and a failed
    // creation becomes an unhandled rejection instead of a failed start). Forced, not timed: a session
    // of the spec's own holds a write to posts open, which CREATE INDEX (even IF NOT EXISTS, on an
    // index that exists) waits behind; while PostgreSQL shows it waiting, ensureIndexes must not have
    // resolved. (A set-up that sends no DDL has nothing to wait for.)
    if ((await resolveService('postgres')).provider === 'embedded') skip(); // one session at a time
    const writer = await db.connect();
    let settled = false;
    let setup: Promise<void> | undefined;
    /** Sessions of this database waiting for a lock in a CREATE INDEX. */
    const waitingDdl = async () =>
      (
        await db.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%create%index%'`,
        )
      ).rows[0]!.n;
    try {
      await writer.query('BEGIN');
      await writer.query('UPDATE posts SET title = title WHERE id = (SELECT min(id) FROM posts)');
      setup = ensureIndexes(db).finally(() => {
        settled = true;
      });
      let waiting = 0;
      for (let polls = 0; polls < 100 && waiting === 0; polls++) {
        waiting = await waitingDdl();
        if (waiting === 0) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      if (waiting > 0)
        expect(settled, 'ensureIndexes had resolved while its CREATE INDEX still waited in PostgreSQL').toBe(false);
    } finally {
      await writer.query('COMMIT').catch(() => undefined);
      writer.release();
    }
    await setup;
  });

  it('index set-up that PostgreSQL cancels part-way leaves no broken index: it fails, and the next run leaves a valid one', async ({
    skip,
  }) => {
    // A deploy's CREATE INDEX can be cancelled: a statement or lock timeout, an operator, a restart. It
    // must then fail the start (not log and carry on without the index), and the next start must end
    // with an index PostgreSQL uses. CREATE INDEX CONCURRENTLY that fails leaves an INVALID index
    // behind, which IF NOT EXISTS then skips on every later start: posts are read whole for good while
    // the index is listed. Forced, not timed: a write of the spec's own holds the CREATE INDEX waiting,
    // and the spec cancels it while PostgreSQL shows it waiting.
    if ((await resolveService('postgres')).provider === 'embedded') skip(); // one session at a time
    // The file's set-up built the indexes already: this test needs a build to cancel.
    await withPostsIndexesRebuilt(async () => {
      // The set-up runs on a pool of its own, named, so the spec cancels only its statements, and a
      // cancel that lands late cannot reach a connection the tests after this one use.
      const setupPool = createPgPool(db.options.connectionString!, { max: 2, application_name: 'labs-index-setup' });
      const writer = await db.connect();
      try {
        // A lock a write takes, without writing: an UPDATE would leave a HOT chain, and an index built
        // over one is not usable by transactions older than it (pg_index.indcheckxmin), on a server
        // where other transactions run, for a while after the test.
        await writer.query('BEGIN');
        await writer.query('LOCK TABLE posts IN ROW EXCLUSIVE MODE');
        const first = ensureIndexes(setupPool).then(
          () => 'resolved',
          (error: Error) => `rejected: ${error.message}`,
        );
        let cancelled = 0;
        for (let polls = 0; polls < 250 && cancelled === 0; polls++) {
          cancelled = (
            await db.query<{ n: number }>(
              `SELECT count(*) FILTER (WHERE pg_cancel_backend(pid))::int AS n FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%create%index%'
               AND application_name = 'labs-index-setup'`,
            )
          ).rows[0]!.n;
          if (cancelled === 0) await new Promise((resolve) => setTimeout(resolve, 20));
        }
        await writer.query('COMMIT');
        const outcome = await first;
        if (cancelled > 0) {
          const usable = (await postsIndexState()).filter((ix) => ix.valid && leadsWithAuthorId(ix.definition));
          if (outcome === 'resolved')
            expect(
              usable.map((ix) => ix.name),
              'ensureIndexes resolved after PostgreSQL cancelled its CREATE INDEX, with no valid index on posts (author_id, ...): a start that carries on without its index',
            ).not.toEqual([]);
        }
        await expect(ensureIndexes(setupPool), 'the next run of ensureIndexes').resolves.toBeUndefined();
        const after = await postsIndexState();
        expect(
          after.filter((ix) => !ix.valid).map((ix) => ix.name),
          `INVALID indexes on posts after the next run (a cancelled CONCURRENTLY build that IF NOT EXISTS skips): ${after.map((ix) => `${ix.name}${ix.valid ? '' : ' (INVALID)'}`).join(', ')}`,
        ).toEqual([]);
        // (A set-up that sends no DDL, the starter's, had nothing to cancel and is judged by the challenges.)
        if (cancelled > 0)
          expect(
            after.some((ix) => ix.valid && leadsWithAuthorId(ix.definition)),
            'a valid index on posts leading with author_id',
          ).toBe(true);
      } finally {
        await writer.query('ROLLBACK').catch(() => undefined);
        writer.release();
        await setupPool.end();
      }
    });
  });

  it('index set-up run by two instances at the same moment (a deploy starts several): both succeed, and posts gets its index', async ({
    skip,
  }) => {
    // Every instance runs ensureIndexes as it starts, and a deploy starts several together. IF NOT EXISTS
    // only looks for the name before the build: two builds that both looked before either had finished
    // both go ahead, and the second to finish fails on PostgreSQL's own catalog (a duplicate key in
    // pg_class), so that instance fails to start, every time two overlap. Forced, not timed: a session
    // of the spec's own holds posts locked while two set-ups, each on a pool of its own, queue behind it
    // (PostgreSQL shows both waiting); then it lets them go together. A set-up that serialises itself
    // (an advisory lock) or tries again after that duplicate passes; one that sends no DDL has nothing
    // to race, and is judged by the challenges.
    if ((await resolveService('postgres')).provider === 'embedded') skip(); // one session at a time
    await withPostsIndexesRebuilt(async () => {
      const instances = [1, 2].map(() =>
        createPgPool(db.options.connectionString!, { max: 1, application_name: 'labs-index-twice' }),
      );
      const writer = await db.connect();
      try {
        await writer.query('BEGIN');
        await writer.query('LOCK TABLE posts IN ROW EXCLUSIVE MODE');
        let settled = 0;
        const outcomes = instances.map((pool) =>
          ensureIndexes(pool)
            .then(
              () => 'resolved',
              (error: Error) => `rejected: ${error.message}`,
            )
            .finally(() => {
              settled++;
            }),
        );
        let waiting = 0;
        for (let polls = 0; polls < 250 && waiting < 2 && settled < 2; polls++) {
          waiting = (
            await db.query<{ n: number }>(
              `SELECT count(*)::int AS n FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock' AND application_name = 'labs-index-twice'`,
            )
          ).rows[0]!.n;
          if (waiting < 2) await new Promise((resolve) => setTimeout(resolve, 20));
        }
        await writer.query('COMMIT');
        expect(
          await Promise.all(outcomes),
          `ensureIndexes on two instances started together (${waiting} of them seen waiting behind the spec's lock, then let go at once)`,
        ).toEqual(['resolved', 'resolved']);
        if (waiting === 2)
          expect(
            (await postsIndexState()).some((ix) => ix.valid && leadsWithAuthorId(ix.definition)),
            'a valid index on posts leading with author_id, after both set-ups',
          ).toBe(true);
      } finally {
        await writer.query('ROLLBACK').catch(() => undefined);
        writer.release();
        for (const pool of instances) await endWithin2s(pool);
      }
    });
  });

  it('an unknown path is a 404 problem', async () => {
    const res = await fetch(`${server.url}/api/author`);
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await res.json()).toMatchObject({ status: 404, title: 'Not Found', detail: 'No route for GET /api/author' });
  });

  it('a post published between two requests is in the second response (nothing is cached across requests)', async () => {
    expect((await getAuthors('?limit=3')).body).toEqual(await expectedPage({ limit: 3, after: 0 }));
    const { rows } = await db.query<{ id: string }>(
      "INSERT INTO posts (author_id, title, published_at) VALUES (2, 'Breaking news', '2030-01-01T00:00:00Z') RETURNING id",
    );
    try {
      const { body } = await getAuthors('?limit=3');
      expect((body as AuthorsPage).authors[1]?.latestPosts[0]).toEqual({
        id: Number(rows[0]!.id),
        title: 'Breaking news',
        publishedAt: '2030-01-01T00:00:00.000Z',
      });
      expect(body).toEqual(await expectedPage({ limit: 3, after: 0 }));
    } finally {
      await db.query('DELETE FROM posts WHERE id = $1', [rows[0]!.id]);
    }
  });

  it('two posts of one author published at the same moment come newest id first, on every page, whatever plan PostgreSQL picks', async () => {
    // Publication times are not unique: without `id` as the tie-breaker in every ORDER BY, which of two
    // posts at the same moment is "newer" is up to the plan (an index's order, a sort that is not
    // stable), and a page may show either or both. Each of the first ten authors with posts gets a
    // post at exactly the time of its newest one.
    const { rows } = await db.query<{ id: string; author_id: number }>(
      `INSERT INTO posts (author_id, title, published_at)
       SELECT author_id, 'Same moment', max(published_at) FROM posts WHERE author_id <= 11 GROUP BY author_id
       RETURNING id, author_id`,
    );
    // The same API on connections that may not scan an index in its order: PostgreSQL then reads the
    // posts and sorts them, and a sort leaves ties in the order it read them (here the older post
    // first). The index scan alone would hide a missing tie-breaker: an index on (author_id,
    // published_at DESC, id DESC) hands ties over newest id first whatever the ORDER BY says, until
    // the planner picks another plan (new statistics, a bigger table, the index rebuilt).
    try {
      expect(rows.length).toBeGreaterThanOrEqual(10);
      const expected = await expectedPage({ limit: 11, after: 0 });
      await withoutIndexScans(async (sortingPool) => {
        for (const [url, plan] of [
          [server.url, 'the plan PostgreSQL picks'],
          [await apiOn(sortingPool), 'index scans switched off'],
        ] as const) {
          const body = (await (await fetch(`${url}/api/authors?limit=11`)).json()) as AuthorsPage;
          for (const author of body.authors.filter((a) => a.latestPosts.length > 0))
            expect(
              author.latestPosts[0]?.title,
              `author ${author.id} (${plan}): the newest post, of two at ${author.latestPosts[0]?.publishedAt}`,
            ).toBe('Same moment');
          expect(body, plan).toEqual(expected);
        }
      });
    } finally {
      await db.query('DELETE FROM posts WHERE id = ANY($1::bigint[])', [rows.map((r) => r.id)]);
    }
  });

  it('PostgreSQL returns only the rows a page shows, its authors and their latest posts (N = 10, 100)', async () => {
    // Rows returned, summed over the page's statements: a constant number of statements can still read
    // the whole posts table and keep 3 per author in JavaScript. The bound is what the page shows, which
    // is what a fix that filters and ranks in SQL returns (the single-query fix returns fewer: one row
    // per author, its posts folded into JSON).
    for (const n of [10, 100]) {
      const { status, body, rows } = await getAuthors(`?limit=${n}`);
      expect(status).toBe(200);
      const { authors } = body as AuthorsPage;
      const posts = authors.reduce((sum, a) => sum + a.latestPosts.length, 0);
      const shown = authors.length + posts;
      expect(
        rows,
        `N=${n}: PostgreSQL sent back ${rows} rows for a page that shows ${authors.length} authors and ${posts} posts (${shown} rows); the other ${rows - shown} were read, sent and thrown away in JavaScript`,
      ).toBeLessThanOrEqual(shown);
    }
  });

  it("every page sends PostgreSQL the same SQL text, whatever its authors: the page's ids go in as a parameter, never into the text", async () => {
    // SQL built by pasting values (`ARRAY[${ids.join(',')}]`, `IN (1, 2, 3)`) is a different statement
    // for every page: PostgreSQL parses and plans each from scratch, pg_stat_statements files the feed's
    // query under one entry per page size (each looking cheap, none the sum), a prepared statement can
    // never be reused, and the day a key is a string (a slug, a GraphQL ID) the paste is SQL injection.
    // Sent as one array parameter (`$1::int[]`), the text is the same for 1 author and for 100.
    const textsOf = async (query: string) => {
      const { status, sent } = await getAuthors(query);
      expect(status, `GET /api/authors${query}`).toBe(200);
      return [...new Set(sent.map((statement) => statement.text.replace(/\s+/g, ' ').trim()))].sort();
    };
    const first = await textsOf('?limit=1');
    for (const query of ['?limit=2&after=7', '?limit=10&after=5', '?limit=100', `?limit=50&after=${AUTHORS - 20}`])
      expect(await textsOf(query), `the SQL texts of GET /api/authors${query}, next to those of ?limit=1`).toEqual(
        first,
      );
  });

  it("the single-query alternative (LATERAL + json_agg) returns the same pages in one query, its times in UTC whatever the session's time zone", async () => {
    // The spec's own copy, and the exercise's if it offers one (`loadAuthorFeedInOneQuery`, as the
    // reference does for the load script to compare).
    const offered = (feed as { loadAuthorFeedInOneQuery?: FeedLoader }).loadAuthorFeedInOneQuery;
    const loaders: [string, (page: PageRequest) => Promise<AuthorWithPosts[]>][] = [
      ["the spec's", (page) => pageInOneQuery(db, page)],
    ];
    if (offered) loaders.push(["the exercise's", (page) => offered(db, page)]);
    for (const [whose, load] of loaders) {
      for (const { page, query } of PAGES) {
        sql.reset();
        const authors = await load(page);
        expect(sql.statements, `${whose}, ${query}`).toBe(1);
        expect(authors, `${whose}, ${query}`).toEqual((await expectedPage(page)).authors);
      }
    }
    // A time PostgreSQL writes as text (to_char, ::text, to_json) is written in the session's TimeZone:
    // the server's setting (initdb copies the host's), or a role's, a database's, a client's (PGTZ,
    // `options=-c timezone=...`). UTC on the laptop and in CI, the region's zone on some server.
    // `to_char(published_at, '...Z')` without `AT TIME ZONE 'UTC'` then writes local time labelled UTC:
    // every time on the page off by the offset, only where the setting differs. So the exercise's
    // loaders run again on sessions at +05:45 (Kathmandu: no daylight saving, not a whole hour).
    const elsewhere = createPgPool(db.options.connectionString!, { max: 2 });
    elsewhere.on('connect', (client) => {
      client.query("SET TIME ZONE 'Asia/Kathmandu'").catch(() => undefined);
    });
    try {
      const { rows } = await elsewhere.query<{ local: string }>(
        "SELECT to_char(timestamptz '2025-01-01 00:00:00+00', 'HH24:MI') AS local",
      );
      expect(rows[0]?.local, 'midnight UTC, written by a session of the other time zone').toBe('05:45');
      const exercise: [string, FeedLoader][] = [['loadAuthorFeed', feed.loadAuthorFeed]];
      if (offered) exercise.push(['loadAuthorFeedInOneQuery', offered]);
      for (const [name, load] of exercise)
        for (const { page, query } of PAGES)
          expect(await load(elsewhere, page), `the exercise's ${name}, ${query}, on a session at +05:45`).toEqual(
            (await expectedPage(page)).authors,
          );
    } finally {
      // On the embedded engine every connection is one session: the setting must not outlive the test.
      await elsewhere.query('RESET TIME ZONE').catch(() => undefined);
      await elsewhere.end();
    }
  });
});

describe('baseline: PostgreSQL stalled or down is a prompt 503, never a hang or a 500', () => {
  /** Generous: the pool gives up after 2 to 3 s (APP_POOL_OPTIONS); a hang is what this must rule out. */
  const ANSWER_WITHIN_MS = 10_000;

  /** The API on its own pool through a proxy the test can stall or kill, warmed with one good page. */
  async function apiBehindProxy() {
    const proxy = await stallingProxy(db.options.connectionString!);
    const pool = createPgPool(proxy.via(db.options.connectionString!), APP_POOL_OPTIONS);
    lab.context.onClose(() => proxy.kill());
    // pool.end() waits for every checked-out client: bounded, so a client a wrong fix never released
    // fails the test that counts it instead of hanging the file's teardown.
    lab.context.onClose(() => Promise.race([pool.end(), new Promise((r) => setTimeout(r, 2000))]));
    const api = await lab.context.listen((await nPlusOneLab.build(lab.context, { db: pool })).app);
    // One connection open and idle in the pool, as in a running service. Opening it is bounded by the
    // API's 2 s connection timeout, which a very busy machine can exceed: tried until it succeeds.
    const first = await untilOk(() => fetch(`${api.url}/api/authors?limit=1`));
    expect(first.status).toBe(200);
    return { proxy, pool, base: `${api.url}/api/authors`, url: `${api.url}/api/authors?limit=1` };
  }

  /**
   * Clients of `pool` checked out or waited for, once they have had 8 s to come back. A request answers
   * at its first failed statement; statements it had queued may still be settling (each bounded by the
   * pool's timeouts, 3 s at most). Once they have, nothing is lent: a client still out is one a path
   * never gave back.
   */
  async function checkedOutOnceSettled(pool: pg.Pool): Promise<number> {
    const lent = () => checkedOut(pool) + pool.waitingCount;
    for (let i = 0; i < 80 && lent() > 0; i++) await new Promise((r) => setTimeout(r, 100));
    return lent();
  }

  /** Three requests at once: each answer's status, Retry-After and problem status, or 'no answer'. */
  async function threeRequests(url: string) {
    return Promise.all(
      [1, 2, 3].map(async () => {
        try {
          const res = await fetch(url, { signal: AbortSignal.timeout(ANSWER_WITHIN_MS) });
          const problem = (await res.json()) as { status?: number };
          const type = res.headers.get('content-type')?.split(';')[0];
          return { status: res.status, retryAfter: res.headers.get('retry-after'), type, problem: problem.status };
        } catch {
          return `no answer within ${ANSWER_WITHIN_MS / 1000} s`;
        }
      }),
    );
  }

  const unavailable = {
    status: 503,
    retryAfter: String(RETRY_AFTER_SEC),
    type: 'application/problem+json',
    problem: 503,
  };

  it('stalled (connections open, nothing answers): every request gets a 503 with Retry-After within 10 s, and the API recovers with every connection back in the pool', async () => {
    const { proxy, pool, url } = await apiBehindProxy();
    proxy.stall();
    try {
      // One request meets the idle connection (the query timeout), the others must open new ones (the
      // connection timeout): both waits are bounded.
      expect(await threeRequests(url)).toEqual([unavailable, unavailable, unavailable]);
    } finally {
      proxy.resume();
    }
    expect((await untilOk(() => fetch(url))).status).toBe(200);
    expect(
      await checkedOutOnceSettled(pool),
      'connections still checked out (or waited for) 8 s after the API answered again',
    ).toBe(0);
  });

  it('down (connections closed and refused): every request gets a 503 with Retry-After within 10 s, and no connection stays checked out', async () => {
    const { proxy, pool, url } = await apiBehindProxy();
    await proxy.kill();
    expect(await threeRequests(url)).toEqual([unavailable, unavailable, unavailable]);
    expect(
      await checkedOutOnceSettled(pool),
      'connections still checked out (or waited for) 8 s after every request was answered',
    ).toBe(0);
  });

  it('a statement still running in PostgreSQL when the read timeout gives up on it: a 503, and no client the pool lends next is still busy with it', async ({
    skip,
  }) => {
    if ((await resolveService('postgres')).provider === 'embedded') skip(); // one session at a time
    // The read timeout (pg's query_timeout) gives up on the client's side only: the statement it sent
    // may still be running in PostgreSQL, on a stalled network (the server's own cancel cannot arrive
    // either) or with no statement_timeout, or a longer one, on that session. Such a client must not be
    // lent again: the next request would queue behind a statement nobody waits for. pool.query() gives
    // a failed client back with its error (release(err)), which closes it; release() without the error
    // puts it back among the idle. Forced, not timed: posts is locked by a session of the spec's own,
    // and the API runs on a pool with a read timeout and no statement_timeout, so the posts statement
    // waits in PostgreSQL for as long as the test holds the lock. (1.5 s: the authors statement, which
    // posts' lock does not hold up, must never meet the read timeout, even on a busy machine.)
    const pool = createPgPool(db.options.connectionString!, { max: 3, query_timeout: 1500 });
    const base = `${await apiOn(pool)}/api/authors`;
    const locker = await db.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE posts IN ACCESS EXCLUSIVE MODE');
      const res = await fetch(`${base}?limit=10`, { signal: AbortSignal.timeout(ANSWER_WITHIN_MS) });
      await res.arrayBuffer();
      expect(res.status, 'a page whose posts statement waits past the read timeout').toBe(503);
      // Each idle client, as the pool would lend it next, and what its session is doing in PostgreSQL.
      const lent: pg.PoolClient[] = [];
      try {
        for (let idle = pool.idleCount; idle > 0; idle--) lent.push(await pool.connect());
        const pids = lent.map((client) => (client as pg.PoolClient & { processID: number }).processID);
        const { rows } = await db.query<{ pid: number; state: string; query: string }>(
          `SELECT pid, state, left(regexp_replace(query, '\\s+', ' ', 'g'), 80) AS query FROM pg_stat_activity
           WHERE pid = ANY($1::int[]) AND state <> 'idle'`,
          [pids],
        );
        expect(
          rows.map((row) => `session ${row.pid}, ${row.state}: ${row.query}`),
          `idle clients of the pool (${lent.length}) whose session in PostgreSQL still runs a statement the read timeout gave up on`,
        ).toEqual([]);
      } finally {
        for (const client of lent) client.release();
      }
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      locker.release();
      await endWithin2s(pool);
    }
  });

  it("each of the exercise's loaders, its statement cancelled by PostgreSQL mid-page: it rejects, and every client goes back to the pool", async ({
    skip,
  }) => {
    if ((await resolveService('postgres')).provider === 'embedded') skip(); // one session at a time
    // A statement can fail after others of the page succeeded: a statement timeout, an operator's
    // pg_cancel_backend, a failover. The loader must then reject (the API turns that into a 5xx), not
    // resolve with a page that is empty or short of its posts, which a client and any cache take for
    // the truth; and a client it checked out by hand must go back on that path too, not only on success.
    // The API's own loader meets resets in the test above; this one also holds the exercise's other
    // loader, which no route serves. Forced, not timed: posts is locked by a session of the spec's own,
    // and the loader's statement on posts is cancelled while PostgreSQL shows it waiting behind the lock.
    const offered = (feed as { loadAuthorFeedInOneQuery?: FeedLoader }).loadAuthorFeedInOneQuery;
    const loaders: [string, FeedLoader][] = [['loadAuthorFeed', feed.loadAuthorFeed]];
    if (offered) loaders.push(['loadAuthorFeedInOneQuery', offered]);
    // Named, so the spec cancels only this pool's statements.
    const pool = createPgPool(db.options.connectionString!, { max: 3, application_name: 'labs-feed-cancel' });
    try {
      for (const [name, load] of loaders) {
        const locker = await db.connect();
        let outcome: Promise<string>;
        let cancelled = 0;
        try {
          await locker.query('BEGIN');
          await locker.query('LOCK TABLE posts IN ACCESS EXCLUSIVE MODE');
          outcome = load(pool, { limit: 10, after: 0 }).then(
            (authors) => `resolved with ${authors.length} authors: ${JSON.stringify(authors).slice(0, 120)}`,
            () => 'rejected',
          );
          for (let polls = 0; polls < 250 && cancelled === 0; polls++) {
            cancelled = (
              await db.query<{ n: number }>(
                `SELECT count(*) FILTER (WHERE pg_cancel_backend(pid))::int AS n FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock' AND application_name = 'labs-feed-cancel'`,
              )
            ).rows[0]!.n;
            if (cancelled === 0) await new Promise((resolve) => setTimeout(resolve, 20));
          }
        } finally {
          await locker.query('ROLLBACK').catch(() => undefined);
          locker.release();
        }
        expect(cancelled, `${name}: statements on posts cancelled while they waited for the lock`).toBeGreaterThan(0);
        expect(await outcome, `${name}, its statement on posts cancelled by PostgreSQL`).toBe('rejected');
        // Settled first: a loader of one statement per author rejects at the first failure, with the
        // rest of its statements still running.
        expect(
          await checkedOutOnceSettled(pool),
          `clients still checked out of the pool (or waited for) once ${name} rejected and its statements settled`,
        ).toBe(0);
      }
    } finally {
      await endWithin2s(pool);
    }
  });

  it('connections reset mid-query under load (20 clients): each request a 503 or a 200 with its whole page, then right pages and every connection back in the pool', async ({
    skip,
  }) => {
    // The embedded engine (PGlite) serves one session at a time: the spec's lock-holding session and
    // its pg_stat_activity watch cannot run beside the API's connections, so there is nothing to reset.
    if ((await resolveService('postgres')).provider === 'embedded') skip();
    // The posts table is locked (ACCESS EXCLUSIVE, in a transaction of the spec's own), and 20 requests
    // for pages of 10 to 100 authors come in: each reads its authors and then waits in PostgreSQL for
    // posts, its statement sent, its connection checked out (the rest wait for a connection). Then the
    // proxy is killed, which resets every connection mid-query, and revived. A pg client checked out of
    // a pool has no 'error' listener of the pool's: an error event with none of ours would take the
    // whole process down (vitest reports it as an unhandled error). And a client checked out by hand
    // (db.connect()) and released only on success is lost to the pool for good: counted once every
    // request is answered. The reset cuts the posts query of requests whose authors came back: a 200
    // then must still be the whole page. Posts that fail to load answered as [] ("show the authors
    // anyway"), or DataLoader's loadMany, which hands errors back as values, make a 200 that tells the
    // client, and any cache in between, that these authors have no posts, and hides the outage from
    // every 5xx alert; the 503 says to come back in 2 s.
    const { proxy, pool, base } = await apiBehindProxy();
    const locker = await db.connect();
    const pages = Array.from({ length: 20 }, (_, i) => ({ limit: [10, 50, 100][i % 3]!, after: (i * 7) % AUTHORS }));
    let load: Promise<{ page: PageRequest; status: number | string; retryAfter: string | null; body?: unknown }>[] = [];
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE posts IN ACCESS EXCLUSIVE MODE');
      load = pages.map(async (page) => {
        try {
          const res = await fetch(`${base}?limit=${page.limit}&after=${page.after}`, {
            signal: AbortSignal.timeout(ANSWER_WITHIN_MS),
          });
          const body: unknown = res.status === 200 ? await res.json() : await res.arrayBuffer();
          return { page, status: res.status, retryAfter: res.headers.get('retry-after'), body };
        } catch {
          return { page, status: `no answer within ${ANSWER_WITHIN_MS / 1000} s`, retryAfter: null };
        }
      });
      let waiting = 0;
      for (let i = 0; i < 1000 && waiting < 5; i++) {
        const { rows } = await db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        );
        waiting = rows[0]?.n ?? 0;
        if (waiting < 5) await new Promise((r) => setTimeout(r, 10));
      }
      expect(
        waiting,
        'statements on posts waiting in PostgreSQL when the connections are reset',
      ).toBeGreaterThanOrEqual(5);
      await proxy.kill();
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      locker.release();
      await proxy.kill();
    }
    const answers = await Promise.all(load);
    const wrong: { page: PageRequest; status: number | string; retryAfter?: string | null; differs?: string }[] = [];
    for (const { page, status, retryAfter, body } of answers) {
      if (status === 503 && retryAfter === '2') continue;
      if (status !== 200) {
        wrong.push({ page, status, retryAfter });
        continue;
      }
      const expected = await expectedPage(page);
      if (isDeepStrictEqual(body, expected)) continue;
      const authors = (body as Partial<AuthorsPage>).authors ?? [];
      const off = authors.find((author, i) => !isDeepStrictEqual(author, expected.authors[i]));
      wrong.push({ page, status, differs: off ? `author ${off.id}: ${JSON.stringify(off)}` : JSON.stringify(body) });
    }
    expect(
      wrong,
      'answers other than a 503 with Retry-After or a 200 with the whole page while connections were reset',
    ).toEqual([]);
    expect(
      await checkedOutOnceSettled(pool),
      'connections still checked out (or waited for) 8 s after every request was answered',
    ).toBe(0);
    proxy.resume(); // in case a stall was left on: the restarted server answers
    await proxy.revive();
    for (const page of pages.slice(0, 6)) {
      // Back means answering again: a new connection may take a few tries on a very busy machine.
      const res = await untilOk(() => fetch(`${base}?limit=${page.limit}&after=${page.after}`));
      expect(res.status, `?limit=${page.limit}&after=${page.after} once the database is back`).toBe(200);
      expect(await res.json()).toEqual(await expectedPage(page));
    }
    expect(checkedOut(pool), 'connections checked out once the pages after the reset were answered').toBe(0);
  });
});

describe('challenges: what the lazy-loading starter gets wrong', () => {
  // The reference sends 2 statements per page (the authors, then all their posts); the single-query
  // alternative sends 1. Either is right; what must not happen is a count that grows with N.
  /** The constant a fix may have, read off its first request: 1 or 2 (more than 2 is held to 2). */
  const allowedConstant = (firstCount: number) => Math.min(Math.max(firstCount, 1), 2);

  it('challenge: a page costs the same number of queries, at most 2, whatever its size (N = 1, 10, 100)', async () => {
    const perPage: Record<number, number> = {};
    for (const n of [1, 10, 100]) {
      const { status, statements } = await getAuthors(`?limit=${n}`);
      expect(status).toBe(200);
      perPage[n] = statements;
    }
    const c = allowedConstant(perPage[1]!);
    const summary = Object.entries(perPage)
      .map(([n, q]) => `N=${n}: ${q}`)
      .join(', ');
    expect(
      perPage,
      `SQL statements PostgreSQL ran per request: ${summary}; expected ${c} each, whatever N (several statements in one string count one each)`,
    ).toEqual({ 1: c, 10: c, 100: c });
  });

  it('challenge: eight concurrent requests for 50 authors each cost eight times one request, each getting its own page', async () => {
    const perRequest = allowedConstant((await getAuthors('?limit=50&after=160')).statements);
    sql.reset();
    const afters = [0, 20, 40, 60, 80, 100, 120, 140];
    const pages = await Promise.all(
      afters.map(
        async (after) =>
          (await (await fetch(`${server.url}/api/authors?limit=50&after=${after}`)).json()) as AuthorsPage,
      ),
    );
    const total = sql.statements;
    for (const [i, after] of afters.entries()) expect(pages[i]).toEqual(await expectedPage({ limit: 50, after }));
    // Fewer would mean requests share a loader: batched or cached across users, never per request.
    expect(
      total,
      `8 requests made PostgreSQL run ${total} statements; expected ${8 * perRequest} (${perRequest} per request)`,
    ).toBe(8 * perRequest);
  });

  it('challenge: ensureIndexes gives posts an index that leads with its foreign key, author_id', async () => {
    const indexes = await postsIndexes();
    expect(
      [...indexes.values()].some(leadsWithAuthorId),
      `the indexes on posts: ${describeIndexes(indexes)}. PostgreSQL indexes a primary key by itself, never the referencing side of a foreign key; an index whose first column is not author_id cannot go straight to one author's posts`,
    ).toBe(true);
  });

  it('challenge: a page finds its posts through an index on author_id, never a Seq Scan on posts, and in the order it keeps them (EXPLAIN of its SQL)', async () => {
    const { status, sent } = await getAuthors('?limit=10');
    expect(status).toBe(200);
    const indexes = await postsIndexes();
    const problems: string[] = [];
    const seen = new Set<string>();
    for (const statement of sent) {
      if (!/\bposts\b/i.test(statement.text) || seen.has(statement.text)) continue;
      seen.add(statement.text);
      for (const problem of await postsReadsWithoutIndex(statement, indexes))
        problems.push(`${problem}, in: ${oneLine(statement.text)}`);
    }
    expect(seen.size, 'no statement of the page read the posts table').toBeGreaterThan(0);
    expect(
      problems,
      `PostgreSQL's plan for ?limit=10 (EXPLAIN, sequential scans switched off so any usable index wins): ${problems.join('; ')}. The indexes on posts: ${describeIndexes(indexes)}`,
    ).toEqual([]);
  });
});

/** Calls `request` until it answers 200, at most 10 times, and returns the last answer. */
async function untilOk(request: () => Promise<Response>): Promise<Response> {
  for (let attempt = 1; ; attempt++) {
    const res = await request();
    if (res.ok || attempt === 10) return res;
    await res.arrayBuffer();
  }
}

/** The indexes on posts other than its primary key, each with whether PostgreSQL may use it. */
async function postsIndexState(): Promise<{ name: string; valid: boolean; definition: string }[]> {
  const { rows } = await db.query<{ name: string; valid: boolean; definition: string }>(
    `SELECT c.relname AS name, i.indisvalid AS valid, pg_get_indexdef(c.oid) AS definition FROM pg_index i
     JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'posts'::regclass AND NOT i.indisprimary`,
  );
  return rows;
}

/** Drops every index on posts but its primary key. */
async function dropPostsIndexes(): Promise<void> {
  for (const { name } of await postsIndexState()) await db.query(`DROP INDEX IF EXISTS "${name}"`);
}

/**
 * Runs `use` on posts without the indexes the file's set-up built (a test that needs a build of its
 * own), then builds them again exactly as they were, for the tests after it.
 */
async function withPostsIndexesRebuilt(use: () => Promise<void>): Promise<void> {
  const saved = await postsIndexState();
  try {
    await dropPostsIndexes();
    await use();
  } finally {
    await dropPostsIndexes();
    // A test's UPDATE may have left a HOT chain: vacuumed first, so the rebuilt indexes are usable at once.
    await db.query('VACUUM posts');
    for (const { definition } of saved) await db.query(definition);
    const restored = (await postsIndexState()).map((ix) => ix.definition).sort();
    expect(restored, 'the indexes on posts, restored for the tests after this one').toEqual(
      saved.map((ix) => ix.definition).sort(),
    );
  }
}

/** The indexes on posts: name to definition. */
async function postsIndexes(): Promise<Map<string, string>> {
  const { rows } = await db.query<{ indexname: string; indexdef: string }>(
    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'posts' ORDER BY indexname",
  );
  return new Map(rows.map((r) => [r.indexname, r.indexdef]));
}

const leadsWithAuthorId = (indexdef: string) => /\(\s*author_id\b/.test(indexdef);
const describeIndexes = (indexes: Map<string, string>) =>
  [...indexes].map(([name, def]) => `${name} ${def.match(/\(.*\)/)?.[0] ?? def}`).join(', ') || 'none';
const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim().slice(0, 140);

/** A node of EXPLAIN (FORMAT JSON)'s plan tree, with the fields read here. */
interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  Filter?: string;
  'Sort Key'?: string[];
  /** An Incremental Sort's leading keys, the ones its input already comes ordered by. */
  'Presorted Key'?: string[];
  Plans?: PlanNode[];
}

/**
 * How `statement` reads posts, from EXPLAIN with its own parameters: each read that does not go through
 * an index leading with author_id, with a condition on author_id, described in a line.
 *
 * Sequential scans are switched off for the EXPLAIN (SET LOCAL, rolled back). The spec's table is small
 * (about 1,400 posts), and there the planner is right to read it whole whatever the indexes; the question
 * that matters at 100,000 posts is whether it could use an index at all. With seq scans off it takes
 * any usable index, and still answers Seq Scan when there is none. Sorts are switched off the same way
 * (see below).
 */
async function postsReadsWithoutIndex(statement: SentSql, indexes: Map<string, string>): Promise<string[]> {
  if (statement.statements > 1)
    return [
      'several statements in one string (the statement count challenge says why not), which EXPLAIN cannot judge one by one',
    ];
  const client = await db.connect();
  let plan: PlanNode;
  try {
    await client.query('BEGIN');
    await client.query('SET LOCAL enable_seqscan = off');
    // Sorts off too, for the same reason: on a table this small a sort of an author's few posts can be
    // cheaper than walking an index in order, and the planner would pick it even with the right index.
    // With sorts off it walks an index that gives the order whenever there is one, and still sorts
    // when there is none.
    await client.query('SET LOCAL enable_sort = off');
    const { rows } = await client.query<{ 'QUERY PLAN': { Plan: PlanNode }[] }>(
      `EXPLAIN (FORMAT JSON) ${statement.text}`,
      statement.values ? [...statement.values] : undefined,
    );
    plan = rows[0]!['QUERY PLAN'][0]!.Plan;
  } finally {
    await client.query('ROLLBACK');
    client.release();
  }
  const problems: string[] = [];
  const usable = (node: PlanNode) =>
    leadsWithAuthorId(indexes.get(node['Index Name'] ?? '') ?? '') && /\bauthor_id\b/.test(node['Index Cond'] ?? '');
  const visit = (node: PlanNode) => {
    if (node['Relation Name'] === 'posts') {
      const type = node['Node Type'];
      const indexScans =
        type === 'Bitmap Heap Scan'
          ? (node.Plans ?? []).flatMap(function bitmapLeaves(n: PlanNode): PlanNode[] {
              return n['Node Type'] === 'Bitmap Index Scan' ? [n] : (n.Plans ?? []).flatMap(bitmapLeaves);
            })
          : type === 'Index Scan' || type === 'Index Only Scan'
            ? [node]
            : [];
      if (indexScans.length === 0) problems.push(`${type} on posts${node.Filter ? ` (Filter: ${node.Filter})` : ''}`);
      for (const scan of indexScans.filter((n) => !usable(n)))
        problems.push(
          `${scan['Node Type']} using ${scan['Index Name']}${scan['Index Cond'] ? ` (Index Cond: ${scan['Index Cond']})` : ''}${node.Filter ? ` (Filter: ${node.Filter})` : ''}, an index that does not lead with author_id`,
        );
    }
    // A per-author LIMIT over a sort of posts: the index finds an author's posts but not in the page's
    // order, so PostgreSQL reads and sorts them to keep the newest few. A Sort: every post of the
    // author (an index on author_id alone). An Incremental Sort: the index gives the order only part of
    // the way (a later column missing, or in the other direction: `id` where the ORDER BY says
    // `id DESC`), so each run of posts equal on the first keys is read whole and sorted: a few rows
    // here, every post of a bulk import that shares one published_at there. An index that ends in the
    // ORDER BY's columns, in its directions, hands them over in order, and the LIMIT stops after the
    // few it keeps.
    const sorted =
      node['Node Type'] === 'Limit' ? node.Plans?.find((n) => /^(Incremental )?Sort$/.test(n['Node Type'])) : undefined;
    const sortedPosts = sorted?.Plans?.find((n) => n['Relation Name'] === 'posts');
    if (sorted && sortedPosts)
      problems.push(
        `Limit over ${sorted['Node Type']} (${sorted['Sort Key']?.join(', ') ?? 'keys unknown'}${sorted['Presorted Key'] ? `; presorted by the index: ${sorted['Presorted Key'].join(', ')}` : ''}) of ${sortedPosts['Node Type']} on posts${sortedPosts['Index Name'] ? ` using ${sortedPosts['Index Name']}` : ''}: ${sorted['Presorted Key'] ? "each run of an author's posts equal on the presorted keys" : 'every post of the author'} read and sorted to keep a few; the index does not serve the ORDER BY`,
      );
    for (const child of node.Plans ?? []) visit(child);
  };
  visit(plan);
  return problems;
}
