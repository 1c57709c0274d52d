/**
 * The n-plus-one spec. Baseline tests: the page is right, field for field, and bad input is a 400
 * problem. `challenge:` tests count the SQL statements each request sends through the real pg pool (the
 * test kit instruments it from outside): the starter's 1 + N fails them, a constant number passes.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { openLab } from '@labs/lab-kit';
import { countQueries } from '@labs/test-kit';
import { DEFAULT_LIMIT, MAX_AUTHOR_ID, MAX_LIMIT, type AuthorsPage } from '../server/app.ts';
import { LATEST_POSTS, type AuthorWithPosts, type PageRequest, type Post } from '../server/author-repository.ts';
import { seed } from '../server/database.ts';
import nPlusOneLab from '../server/lab.ts';

/** Small enough to seed in a blink, big enough for a page of 100; authors 13, 26, ... have no posts. */
const AUTHORS = 240;

// The lab as `lab serve` starts it, on this file's own database (dropped when the file ends), seeded
// here with a small dataset; the app queries the same pool the counter watches.
const lab = await openLab(nPlusOneLab);
afterAll(() => lab.close());
const db = await lab.context.database();
await seed(db, { authors: AUTHORS, maxPostsPerAuthor: 12 });
const queries = countQueries(db);
const { app } = await nPlusOneLab.build(lab.context, { db });
const server = await lab.context.listen(app);

/** GET /api/authors with `query`; returns the status, the body and how many SQL statements it cost. */
async function getAuthors(
  query: string,
): Promise<{ status: number; body: unknown; queries: number; sql: readonly string[] }> {
  queries.reset();
  const res = await fetch(`${server.url}/api/authors${query}`);
  const body: unknown = await res.json();
  return { status: res.status, body, queries: queries.count, sql: queries.queries };
}

/**
 * The expected page, computed by the test's own SQL, written differently from both versions: a post is
 * among an author's latest when fewer than LATEST_POSTS of the author's posts are newer than it.
 */
async function expectedPage(page: PageRequest): Promise<AuthorsPage> {
  const { rows } = await db.query<{
    author_id: number;
    name: string;
    id: string | null;
    title: string | null;
    published_at: Date | null;
  }>(
    `SELECT a.id AS author_id, a.name, p.id, p.title, p.published_at
     FROM (SELECT id, name FROM authors WHERE id > $1 ORDER BY id LIMIT $2) a
     LEFT JOIN (
       SELECT p.* FROM posts p
       WHERE (SELECT count(*) FROM posts newer
              WHERE newer.author_id = p.author_id
                AND (newer.published_at > p.published_at OR (newer.published_at = p.published_at AND newer.id > p.id))) < $3
     ) p ON p.author_id = a.id
     ORDER BY a.id, p.published_at DESC, p.id DESC`,
    [page.after, page.limit, LATEST_POSTS],
  );
  const authors: AuthorWithPosts[] = [];
  for (const row of rows) {
    let author = authors.at(-1);
    if (author?.id !== row.author_id) {
      author = { id: row.author_id, name: row.name, latestPosts: [] };
      authors.push(author);
    }
    if (row.id !== null)
      author.latestPosts.push({ id: Number(row.id), title: row.title!, publishedAt: row.published_at!.toISOString() });
  }
  const last = authors.at(-1);
  return { authors, nextAfter: last && authors.length === page.limit ? last.id : null };
}

/**
 * The README's other fix, written here rather than imported from solution/ (the spec judges the
 * reference, so it must not lean on it): the whole page in one statement, each author's newest posts
 * read by a LATERAL subquery and folded into one JSON array per author by json_agg.
 */
async function pageInOneQuery(page: PageRequest): Promise<AuthorWithPosts[]> {
  const { rows } = await db.query<{ id: number; name: string; latest_posts: Post[] }>(
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

  it('pages cover every author exactly once, and the dataset has the edge cases', async () => {
    const seen: number[] = [];
    let after = 0;
    for (;;) {
      const { body } = await getAuthors(`?limit=${MAX_LIMIT}&after=${after}`);
      const page = body as AuthorsPage;
      seen.push(...page.authors.map((a) => a.id));
      if (page.nextAfter === null) break;
      after = page.nextAfter;
    }
    expect(seen).toEqual(Array.from({ length: AUTHORS }, (_, i) => i + 1));
    const { authors } = await expectedPage({ limit: 30, after: 0 });
    const sizes = new Set(authors.map((a) => a.latestPosts.length));
    expect([...sizes].sort()).toEqual([0, 1, 2, 3]); // authors with no posts, with fewer than a page shows, with more
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
    queries.reset();
    const res = await fetch(`${server.url}/api/authors${query}`);
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const max = param === 'limit' ? MAX_LIMIT : MAX_AUTHOR_ID;
    const problem = (await res.json()) as { status: number; title: string; detail: string; errors: string[] };
    expect(problem).toMatchObject({ status: 400, title: 'Bad Request' });
    expect(problem.detail).toContain(`${param}: must be a whole number from 0 to ${max}, got `);
    expect(problem.errors).toEqual([problem.detail]); // one issue: only the bad parameter is named
    expect(queries.count).toBe(0); // rejected before any SQL
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

  it('indexes the foreign key posts.author_id, leading an index', async () => {
    const { rows } = await db.query<{ indexdef: string }>("SELECT indexdef FROM pg_indexes WHERE tablename = 'posts'");
    expect(rows.some((r) => /\(author_id\b/.test(r.indexdef))).toBe(true);
  });

  it('the single-query alternative (LATERAL + json_agg) returns the same pages in one query', async () => {
    for (const { page } of PAGES) {
      queries.reset();
      const authors = await pageInOneQuery(page);
      expect(queries.count).toBe(1);
      expect(authors).toEqual((await expectedPage(page)).authors);
    }
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
      const { status, queries: sent } = await getAuthors(`?limit=${n}`);
      expect(status).toBe(200);
      perPage[n] = sent;
    }
    const c = allowedConstant(perPage[1]!);
    const summary = Object.entries(perPage)
      .map(([n, q]) => `N=${n}: ${q} queries`)
      .join(', ');
    expect(perPage, `queries per request: ${summary}; expected ${c} each, whatever N`).toEqual({ 1: c, 10: c, 100: c });
  });

  it('challenge: eight concurrent requests for 50 authors each cost eight times one request, each getting its own page', async () => {
    const perRequest = allowedConstant((await getAuthors('?limit=50&after=160')).queries);
    queries.reset();
    const afters = [0, 20, 40, 60, 80, 100, 120, 140];
    const pages = await Promise.all(
      afters.map(
        async (after) =>
          (await (await fetch(`${server.url}/api/authors?limit=50&after=${after}`)).json()) as AuthorsPage,
      ),
    );
    const total = queries.count;
    for (const [i, after] of afters.entries()) expect(pages[i]).toEqual(await expectedPage({ limit: 50, after }));
    // Fewer would mean requests share a loader: batched or cached across users, never per request.
    expect(total, `8 requests sent ${total} queries; expected ${8 * perRequest} (${perRequest} per request)`).toBe(
      8 * perRequest,
    );
  });
});
