/**
 * The API: notes of many tenants, and an admin side that shows where they live and adds shards.
 * createApp never listens; `server/lab.ts` builds it for `lab serve`, the spec and the load script.
 * Every input is checked with zod (a 400 problem says what is wrong); errors are RFC 9457 problems.
 *
 *   POST  /api/tenants/:tenant/notes        {"notes":[{"body":"..."}]}     201 {notes}
 *   GET   /api/tenants/:tenant/notes                                       200 {notes}
 *   PATCH /api/tenants/:tenant/notes/:id    {"body":"..."}                 200 {note} | 404
 *   GET   /api/notes?tenants=a,b&limit=20&after=CURSOR                     200 {notes, next}
 *   GET   /api/admin/shards                                                200 {shards}
 *   POST  /api/admin/shards                 adds a shard and reshards      201 {report} | 409
 *   POST  /api/admin/placement              {"tenants":[...]}              200 {shards}
 *   GET   /api/admin/tenants/:tenant                                       200 {located, rowsByShard}
 *   PUT   /api/admin/hot-tenants/:tenant    {"fanout":8}                   200 | 409
 *
 * Any of them answers 503 with Retry-After when the catalog or a shard it needs does not answer in time
 * (down, or stalled past the pools' timeouts in server/shards.ts); see "Under faults" in the README.
 */
import express, { type Express } from 'express';
import { notFound, parseInput, problemHandler, sendProblem, wholeNumber, z } from '@labs/lab-kit';
import { isPostgresOutage } from '@labs/services';
import * as notes from './notes.ts';
import type { Cursor, ShardRouter } from './router.ts';
import type { ShardSet } from './shards.ts';

/** Tenant ids are part of URLs and of the shard key: a short, plain alphabet. */
export const tenantId = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9_-]{0,63}$/,
    'must be 1-64 characters: lowercase letters, digits, "-" or "_", starting with a letter or digit',
  );

/**
 * PostgreSQL `text` cannot hold U+0000 (it answers SQLSTATE 22021, "invalid byte sequence"), so a note
 * with one is refused here with a 400 that says so, as caching does, instead of failing as a 500 inside
 * the shard's transaction.
 */
const noteBody = z
  .string()
  .min(1, 'must not be empty')
  .max(10_000, 'must be at most 10,000 characters')
  .refine((body) => !body.includes('\u0000'), 'must not contain the NUL character (\\u0000)');
const tenantParams = z.object({ tenant: tenantId });
const noteParams = z.object({ tenant: tenantId, id: z.uuid('must be a UUID') });
const createBody = z.object({
  notes: z
    .array(z.object({ body: noteBody }), 'must be an array of {"body": "..."}')
    .min(1)
    .max(500),
});
const updateBody = z.object({ body: noteBody });

/** A cursor is opaque to clients: base64url of the last note's [createdAt, id]. */
export function encodeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify([cursor.createdAt, cursor.id])).toString('base64url');
}

const cursorParts = z.tuple([z.string().regex(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/), z.uuid()]);
const cursor = z.string().transform((raw, ctx): Cursor => {
  try {
    const [createdAt, id] = cursorParts.parse(JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')));
    return { createdAt, id };
  } catch {
    ctx.addIssue({ code: 'custom', message: 'is not a cursor this API handed out (use the `next` of a page)' });
    return z.NEVER;
  }
});

const acrossQuery = z.object({
  tenants: z
    .string('must list tenant ids, comma-separated')
    .transform((s) => [...new Set(s.split(','))])
    .pipe(z.array(tenantId).min(1).max(100, 'at most 100 tenants per page')),
  limit: wholeNumber({ fallback: 20, min: 1, max: 100 }),
  after: cursor.optional(),
});

const placementBody = z.object({ tenants: z.array(tenantId).min(1).max(20_000) });
const hotBody = z.object({ fanout: z.int().min(2).max(64) });

export interface AppDeps {
  router: ShardRouter;
  shards: ShardSet;
}

/** What a client is told to wait before it tries again, in seconds, when a database is not answering. */
export const RETRY_AFTER_SEC = 2;

/**
 * An outage (a shard or the catalog refused, dropped or timed out) is a 503 with Retry-After, which a
 * client can act on; a bug stays a 500 with its details in the log (the lab kit's problemHandler, one
 * outage line every 5 s). The request needed a database that is not answering, so it is answered as a
 * whole: a page across shards is not served with one shard's notes missing, because it would look
 * complete and its cursor would skip them for good.
 */
const DATABASE_OUTAGE = {
  test: isPostgresOutage,
  service: 'A database this request needs (a shard or the catalog)',
  retryAfterSec: RETRY_AFTER_SEC,
};

export function createApp({ router, shards }: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '1mb' }));

  app.get('/health', (_req, res) => {
    res.json({ ok: true });
  });

  app.post('/api/tenants/:tenant/notes', async (req, res) => {
    const params = parseInput(res, tenantParams, req.params);
    const body = params && parseInput(res, createBody, req.body);
    if (!params || !body) return;
    const created = await router.create(
      params.tenant,
      body.notes.map((n) => n.body),
    );
    res.status(201).json({ notes: created });
  });

  app.get('/api/tenants/:tenant/notes', async (req, res) => {
    const params = parseInput(res, tenantParams, req.params);
    if (!params) return;
    res.json({ notes: await router.list(params.tenant) });
  });

  app.patch('/api/tenants/:tenant/notes/:id', async (req, res) => {
    const params = parseInput(res, noteParams, req.params);
    const body = params && parseInput(res, updateBody, req.body);
    if (!params || !body) return;
    const note = await router.update(params.tenant, params.id, body.body);
    if (!note) return sendProblem(res, 404, `Tenant ${params.tenant} has no note ${params.id}`);
    res.json({ note });
  });

  app.get('/api/notes', async (req, res) => {
    const query = parseInput(res, acrossQuery, req.query);
    if (!query) return;
    const page = await router.listAcross(query.tenants, { limit: query.limit, after: query.after });
    res.json({ notes: page.notes, next: page.next ? encodeCursor(page.next) : null });
  });

  app.get('/api/admin/shards', async (_req, res) => {
    const all = await shards.all();
    const inService = new Set((await shards.list()).map((s) => s.id));
    const rows = await Promise.all(all.map((s) => notes.countAll(s.pool, s)));
    res.json({
      shards: all.map((s, i) => ({ id: s.id, location: s.location, inService: inService.has(s.id), rows: rows[i] })),
    });
  });

  app.post('/api/admin/shards', async (_req, res) => {
    const started = performance.now();
    const done = await shards.exclusive('reshard', () => router.addShard());
    if (!done) return sendProblem(res, 409, 'A reshard is already running; wait for it to finish');
    res.status(201).json({ ...done.result, durationMs: Math.round(performance.now() - started) });
  });

  app.post('/api/admin/placement', async (req, res) => {
    const body = parseInput(res, placementBody, req.body);
    if (!body) return;
    res.json({ shards: await router.locate(body.tenants) });
  });

  app.get('/api/admin/tenants/:tenant', async (req, res) => {
    const params = parseInput(res, tenantParams, req.params);
    if (!params) return;
    // Counted on every shard that exists, not through the router: what is really where.
    const all = await shards.all();
    const counts = await Promise.all(
      all.map(async (s) => (await notes.countByTenant(s.pool, s, params.tenant)).get(params.tenant) ?? 0),
    );
    const [located] = await router.locate([params.tenant]);
    res.json({
      tenant: params.tenant,
      located,
      rowsByShard: Object.fromEntries(all.map((s, i) => [s.id, counts[i]])),
    });
  });

  app.put('/api/admin/hot-tenants/:tenant', async (req, res) => {
    const params = parseInput(res, tenantParams, req.params);
    const body = params && parseInput(res, hotBody, req.body);
    if (!params || !body) return;
    // A split may only widen: the notes already written to its buckets must stay reachable.
    const { rowCount } = await shards.catalog.pool.query(
      `INSERT INTO ${shards.catalog.table('hot_tenants')} AS h (tenant, fanout) VALUES ($1, $2)
       ON CONFLICT (tenant) DO UPDATE SET fanout = excluded.fanout WHERE h.fanout <= excluded.fanout`,
      [params.tenant, body.fanout],
    );
    if (rowCount !== 1) return sendProblem(res, 409, `${params.tenant} is already split wider; a split may only grow`);
    res.json({ tenant: params.tenant, fanout: body.fanout });
  });

  app.use(notFound);
  app.use(
    problemHandler({
      outages: [DATABASE_OUTAGE],
      log: (error) => console.error(`[sharding] ${error.message}`),
      logOutage: (line) => console.warn(`[sharding] ${line}`),
    }),
  );
  return app;
}
