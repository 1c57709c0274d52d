/**
 * The API: notes of many tenants, and an admin side that shows where they live and adds shards.
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
 * Any of them answers 503 with Retry-After when the catalog or a shard it needs does not answer in
 * time (down, or stalled past the pools' timeouts in server/shards.ts): see "Under faults" in the README.
 */
import type { Express } from 'express';
import { labApp, parseRequest as input, sendProblem, wholeNumber, z } from '@labs/lab-kit';
import { isPostgresOutage } from '@labs/services';
import * as notes from './notes.ts';
import type { Cursor, ShardRouter } from './router.ts';
import type { ShardSet } from './shards.ts';

/** Tenant ids are part of URLs and of the shard key: a short, plain alphabet. */
const TENANT_RULE = 'must be 1-64 characters: lowercase letters, digits, "-" or "_", starting with a letter or digit';
const tenantId = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, TENANT_RULE);

/** PostgreSQL `text` cannot hold U+0000 (SQLSTATE 22021): refused here with a 400, not a 500 from a shard. */
const noteBody = z
  .string()
  .min(1, 'must not be empty')
  .max(10_000, 'must be at most 10,000 characters')
  .refine((body) => !body.includes('\u0000'), 'must not contain the NUL character (\\u0000)');
const tenantParams = z.object({ tenant: tenantId });
const noteParams = z.object({ tenant: tenantId, id: z.uuid('must be a UUID') });
const noteList = z.array(z.object({ body: noteBody }), 'must be an array of {"body": "..."}');
const createBody = z.object({ notes: noteList.min(1).max(500) });

/** A cursor is opaque to clients: base64url of the last note's [createdAt, id]. */
const encodeCursor = (cursor: Cursor) =>
  Buffer.from(JSON.stringify([cursor.createdAt, cursor.id])).toString('base64url');
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

/** What a client is told to wait before it tries again, in seconds, when a database is not answering. */
export const RETRY_AFTER_SEC = 2;

/**
 * A request is answered as a whole: a page across shards is never served with one shard's notes
 * missing (it would look complete, and its cursor would skip them), it is a 503 like any outage.
 */
export function createApp({ router, shards }: { router: ShardRouter; shards: ShardSet }): Express {
  const service = 'A database this request needs (a shard or the catalog)';
  const outages = [{ test: isPostgresOutage, service, retryAfterSec: RETRY_AFTER_SEC }];
  return labApp({ name: 'sharding', json: { limit: '1mb' }, outages }, (app) => {
    app.post('/api/tenants/:tenant/notes', async (req, res) => {
      const got = input(req, res, { params: tenantParams, body: createBody });
      if (!got) return;
      const bodies = got.body.notes.map((n) => n.body);
      res.status(201).json({ notes: await router.create(got.params.tenant, bodies) });
    });

    app.get('/api/tenants/:tenant/notes', async (req, res) => {
      const got = input(req, res, { params: tenantParams });
      if (got) res.json({ notes: await router.list(got.params.tenant) });
    });

    app.patch('/api/tenants/:tenant/notes/:id', async (req, res) => {
      const got = input(req, res, { params: noteParams, body: z.object({ body: noteBody }) });
      if (!got) return;
      const { tenant, id } = got.params;
      const note = await router.update(tenant, id, got.body.body);
      if (!note) return sendProblem(res, 404, `Tenant ${tenant} has no note ${id}`);
      res.json({ note });
    });

    app.get('/api/notes', async (req, res) => {
      const got = input(req, res, { query: acrossQuery });
      if (!got) return;
      const { tenants, limit, after } = got.query;
      const page = await router.listAcross(tenants, { limit, after });
      res.json({ notes: page.notes, next: page.next ? encodeCursor(page.next) : null });
    });

    app.get('/api/admin/shards', async (_req, res) => {
      const [all, inService] = await Promise.all([shards.all(), shards.list()]);
      const rows = await Promise.all(all.map((s) => notes.countAll(s.pool, s)));
      res.json({
        shards: all.map((s, i) => ({
          id: s.id,
          location: s.location,
          inService: inService.includes(s),
          rows: rows[i],
        })),
      });
    });

    app.post('/api/admin/shards', async (_req, res) => {
      const started = performance.now();
      const done = await shards.exclusive('reshard', () => router.addShard());
      if (!done) return sendProblem(res, 409, 'A reshard is already running; wait for it to finish');
      res.status(201).json({ ...done.result, durationMs: Math.round(performance.now() - started) });
    });

    app.post('/api/admin/placement', async (req, res) => {
      const got = input(req, res, { body: z.object({ tenants: z.array(tenantId).min(1).max(20_000) }) });
      if (got) res.json({ shards: await router.locate(got.body.tenants) });
    });

    app.get('/api/admin/tenants/:tenant', async (req, res) => {
      const got = input(req, res, { params: tenantParams });
      if (!got) return;
      const { tenant } = got.params;
      // Counted on every shard that exists, not through the router: what is really where.
      const all = await shards.all();
      const counts = await Promise.all(all.map((s) => notes.countByTenant(s.pool, s, tenant)));
      const [located] = await router.locate([tenant]);
      const rowsByShard = Object.fromEntries(all.map((s, i) => [s.id, counts[i]!.get(tenant) ?? 0]));
      res.json({ tenant, located, rowsByShard });
    });

    app.put('/api/admin/hot-tenants/:tenant', async (req, res) => {
      const got = input(req, res, { params: tenantParams, body: z.object({ fanout: z.int().min(2).max(64) }) });
      if (!got) return;
      const { tenant } = got.params;
      // A split may only widen: the notes already written to its buckets must stay reachable.
      const { rowCount } = await shards.catalog.pool.query(
        `INSERT INTO ${shards.catalog.table('hot_tenants')} AS h (tenant, fanout) VALUES ($1, $2)
         ON CONFLICT (tenant) DO UPDATE SET fanout = excluded.fanout WHERE h.fanout <= excluded.fanout`,
        [tenant, got.body.fanout],
      );
      if (rowCount !== 1) return sendProblem(res, 409, `${tenant} is already split wider; a split may only grow`);
      res.json({ tenant, fanout: got.body.fanout });
    });
  });
}
