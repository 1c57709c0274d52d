/**
 * The kit's pieces that labs' servers used to write each by hand: the app's frame (labApp), a request
 * read in parts (parseRequest), bounded clients (failFastRedis, boundedPool), a database prepared by
 * several processes at once (setupTransaction, createQuietly) and what one lab start makes once
 * (context.once). Against real Redis and PostgreSQL.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisClient, isPostgresOutage, isRedisOutage, resolveService, stopServices } from '@labs/services';
import {
  boundedPool,
  createQuietly,
  defineLab,
  failFastRedis,
  labApp,
  listen,
  openLab,
  parseRequest,
  sendProblem,
  setupTransaction,
  z,
} from '../src/index.ts';

afterAll(stopServices);

const kitLab = defineLab({ slug: 'kit-test', build: () => ({ app: labApp({ name: 'kit-test' }, () => {}) }) });

describe('labApp', () => {
  it('frames the routes: JSON bodies, /health, a 404 problem, outages as 503 and bugs as a logged 500', async () => {
    const bugs: string[] = [];
    const outages: string[] = [];
    const downRedis = createRedisClient('redis://127.0.0.1:1', failFastRedis(100));
    downRedis.on('error', () => {});
    const item = z.object({ name: z.string().min(1) });
    const app = labApp(
      {
        name: 'kit-test',
        json: { limit: '1kb' },
        outages: [{ test: isRedisOutage, service: 'The cache', retryAfterSec: 4 }],
        log: (error) => bugs.push(error.message),
        logOutage: (line) => outages.push(line),
      },
      (routes) => {
        routes.use((_req, res, next) => {
          res.set('X-Instance', 'a');
          next();
        });
        routes.post('/items/:id', (req, res) => {
          const got = parseRequest(req, res, { params: z.object({ id: z.coerce.number().int() }), body: item });
          if (got) res.status(201).json({ id: got.params.id, name: got.body.name });
        });
        routes.get('/down', async () => {
          await downRedis.get('x');
        });
        routes.get('/bug', () => {
          throw new TypeError('x.y is not a function');
        });
      },
    );
    await using server = await listen(app);
    await using _ = { [Symbol.asyncDispose]: async () => downRedis.disconnect() };
    const post = (path: string, body: string) =>
      fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });

    expect(await (await post('/items/7', '{"name":"Ada"}')).json()).toEqual({ id: 7, name: 'Ada' });
    expect((await post('/items/7', '{oops')).status).toBe(400);
    expect((await post('/items/7', JSON.stringify({ name: 'x'.repeat(2000) }))).status).toBe(413);
    const health = await fetch(`${server.url}/health`);
    expect(await health.json()).toEqual({ ok: true });
    expect(health.headers.get('x-instance'), "the lab's own middleware applies to /health too").toBe('a');
    const missing = await fetch(`${server.url}/nowhere`);
    expect(missing.status).toBe(404);
    expect(missing.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const down = await fetch(`${server.url}/down`);
    expect(down.status).toBe(503);
    expect(down.headers.get('retry-after')).toBe('4');
    expect(outages).toEqual([expect.stringContaining('The cache is not answering')]);
    const bug = await fetch(`${server.url}/bug`);
    expect(bug.status).toBe(500);
    expect(await bug.text()).not.toContain('is not a function');
    expect(bugs).toEqual(['x.y is not a function']);
  });

  it('parses no body unless asked, and logs under the lab name by default', async () => {
    const lines: string[] = [];
    const error = console.error;
    console.error = (line: string) => lines.push(line);
    try {
      const app = labApp({ name: 'kit-test' }, (routes) => {
        routes.post('/echo', (req, res) => {
          res.json({ parsed: req.body !== undefined });
        });
        routes.get('/bug', () => {
          throw new Error('broken');
        });
      });
      await using server = await listen(app);
      const echo = await fetch(`${server.url}/echo`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"a":1}',
      });
      expect(await echo.json()).toEqual({ parsed: false });
      expect((await fetch(`${server.url}/bug`)).status).toBe(500);
      expect(lines).toEqual(['[kit-test] broken']);
    } finally {
      console.error = error;
    }
  });
});

describe('parseRequest', () => {
  it('stops at the first part that fails, in the order given, and answers its 400 alone', async () => {
    const reached: string[] = [];
    const app = labApp({ name: 'kit-test', json: { limit: '1kb' } }, (routes) => {
      routes.put('/users/:id', (req, res) => {
        const got = parseRequest(req, res, {
          params: z.object({ id: z.string().regex(/^\d+$/, 'must be digits') }),
          body: z.object({ name: z.string('must be a string') }),
        });
        if (!got) return;
        reached.push(got.params.id);
        sendProblem(res, 409, 'taken');
      });
    });
    await using server = await listen(app);
    const put = (id: string, body: unknown) =>
      fetch(`${server.url}/users/${id}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const badBoth = await put('x', { name: 5 });
    expect(badBoth.status).toBe(400);
    expect(await badBoth.json()).toMatchObject({ errors: ['id: must be digits'] });
    expect(await (await put('1', { name: 5 })).json()).toMatchObject({ errors: ['name: must be a string'] });
    expect((await put('1', { name: 'Ada' })).status).toBe(409);
    expect(reached).toEqual(['1']);
  });
});

describe('failFastRedis and boundedPool', () => {
  it('a command on a Redis that is down fails at once, as an outage, instead of queueing', async () => {
    const client = createRedisClient('redis://127.0.0.1:1', failFastRedis(100));
    client.on('error', () => {});
    try {
      const failure = await client.get('x').catch((error: unknown) => error);
      expect(isRedisOutage(failure)).toBe(true);
      expect(client.status, 'nothing waited for a connection').not.toBe('ready');
    } finally {
      client.disconnect();
    }
  });

  it("a statement past statementMs is cancelled by the server, as an outage, and the pool's connection stays usable", async () => {
    await using opened = await openLab(kitLab);
    const pool = await opened.context.database({
      ...boundedPool({ statementMs: 100, answerMs: 5000, connectMs: 5000 }),
      max: 1,
    });
    const failure = await pool.query('SELECT pg_sleep(3)').catch((error: unknown) => error);
    expect((failure as { code?: string }).code).toBe('57014');
    expect(isPostgresOutage(failure)).toBe(true);
    expect((await pool.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });
});

describe('setupTransaction and createQuietly', () => {
  it('two processes preparing at once take turns on the lock, with the long bound, whatever the pool allows', async () => {
    const svc = await resolveService('postgres', { log: null });
    await using opened = await openLab(kitLab);
    const bounded = boundedPool({ statementMs: 200, answerMs: 300, connectMs: 5000 });
    const [a, b, watch] = await Promise.all([
      opened.context.database(bounded),
      opened.context.database(bounded),
      opened.context.database({ max: 1 }),
    ]);
    const steps: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const first = setupTransaction(a, 'kit-test:prepare', async (sql) => {
      steps.push('a in');
      entered();
      await held;
      await sql('SELECT pg_sleep(0.5)'); // past the pool's 200 ms: allowed here
      steps.push('a out');
    });
    await inside;
    const second = setupTransaction(b, 'kit-test:prepare', async () => {
      steps.push('b in');
    });
    if (svc.provider !== 'embedded') {
      // The second is waiting on the lock (an event seen in pg_locks, not a pause), longer than its pool's bounds.
      for (;;) {
        const { rows } = await watch.query(
          "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        );
        if (rows[0].n > 0) break;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
    release();
    await Promise.all([first, second]);
    expect(steps).toEqual(['a in', 'a out', 'b in']);
  });

  it('a preparation that fails leaves nothing behind and says why', async () => {
    await using opened = await openLab(kitLab);
    const pool = await opened.context.database();
    await expect(
      setupTransaction(pool, 'kit-test:prepare', async (sql) => {
        await sql('CREATE TABLE half_done (id int)');
        throw new Error('the seed file is missing');
      }),
    ).rejects.toThrow('the seed file is missing');
    expect((await pool.query("SELECT to_regclass('half_done') AS t")).rows).toEqual([{ t: null }]);
  });

  it('createQuietly runs DDL again after "created meanwhile", and passes on any other error', async () => {
    const sent: string[] = [];
    const collidingOnce = {
      query: async (ddl: string) => {
        sent.push(ddl);
        if (sent.length === 1) throw Object.assign(new Error('duplicate key value (pg_type)'), { code: '23505' });
        return { rows: [] };
      },
    };
    await createQuietly(collidingOnce as never, 'CREATE TABLE IF NOT EXISTS t (id int)');
    expect(sent).toHaveLength(2);

    await using opened = await openLab(kitLab);
    const pool = await opened.context.database({ max: 8 });
    const ddl = 'CREATE TABLE IF NOT EXISTS quietly (id int PRIMARY KEY)';
    await Promise.all(Array.from({ length: 8 }, () => createQuietly(pool, ddl)));
    await expect(createQuietly(pool, 'CREATE TABLE quietly (id int)')).rejects.toMatchObject({ code: '42P07' });
  });
});

describe('context.once', () => {
  it('makes a value once per lab start, shares it, and makes it again after a failure', async () => {
    await using opened = await openLab(kitLab);
    let made = 0;
    const make = async () => {
      made++;
      if (made === 1) throw new Error('first try failed');
      return { made };
    };
    await expect(opened.context.once('tables', make)).rejects.toThrow('first try failed');
    const [x, y] = await Promise.all([opened.context.once('tables', make), opened.context.once('tables', make)]);
    expect(x).toBe(y);
    expect(made).toBe(2);
    await using other = await openLab(kitLab);
    expect(await other.context.once('tables', make), 'another start makes its own').toEqual({ made: 3 });
  });
});
