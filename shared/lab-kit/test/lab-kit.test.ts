/**
 * The lab kit as labs use it: a lab described once, started and closed; what it cleans up; input and
 * configuration checked with one message style; errors answered as RFC 9457 problems.
 */
import { connect } from 'node:net';
import { performance } from 'node:perf_hooks';
import express from 'express';
import pg from 'pg';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  createRedisClient,
  fromService,
  isKafkaOutage,
  isPostgresOutage,
  resolveService,
  stopServices,
} from '@labs/services';
import {
  atMostEvery,
  ConfigError,
  defineLab,
  openLab,
  parseInput,
  problemHandler,
  readConfig,
  ServiceDownError,
  sendProblem,
  startLab,
  listen,
  SERVER_TIME_LIMITS,
  wholeNumber,
  z,
} from '../src/index.ts';

afterAll(stopServices);

describe('wholeNumber and readConfig', () => {
  const schema = z.object({ LIMIT: wholeNumber({ fallback: 10, min: 1, max: 100 }) });

  it('gives the fallback when absent or empty, and the number when valid', () => {
    expect(readConfig(schema, {})).toEqual({ LIMIT: 10 });
    expect(readConfig(schema, { LIMIT: '' })).toEqual({ LIMIT: 10 });
    expect(readConfig(schema, { LIMIT: '42' })).toEqual({ LIMIT: 42 });
  });

  it('names the variable, its range and what came, for every bad value', () => {
    for (const bad of ['abc', '0', '101', '1.5', '-3']) {
      expect(() => readConfig(schema, { LIMIT: bad })).toThrow(ConfigError);
      expect(() => readConfig(schema, { LIMIT: bad })).toThrow(
        `LIMIT: must be a whole number from 1 to 100, got ${JSON.stringify(bad)}`,
      );
    }
  });

  it('can refuse an empty value (a query string), and a repeated one', () => {
    const query = z.object({ limit: wholeNumber({ fallback: 5, min: 0, max: 9, emptyIsAbsent: false }) });
    expect(query.safeParse({ limit: '' }).success).toBe(false);
    expect(query.safeParse({ limit: ['1', '2'] }).success).toBe(false);
    expect(query.safeParse({}).data).toEqual({ limit: 5 });
  });
});

/** An app that answers with the kit's helpers, and one route per way of failing. */
const problemApp = () => {
  const app = express();
  app.use(express.json({ limit: '1kb' }));
  app.post('/items', (req, res) => {
    const item = parseInput(res, z.object({ name: z.string().min(1) }), req.body);
    if (item) res.status(201).json(item);
  });
  app.get('/conflict', (_req, res) => sendProblem(res, 409, 'Already there', { id: 7 }));
  app.get('/down', () => {
    throw new ServiceDownError('Redis is unavailable', 3);
  });
  app.get('/bug', () => {
    throw new TypeError('x.y is not a function');
  });
  app.use(problemHandler(() => {}));
  return { app };
};

describe('problems (RFC 9457)', () => {
  const lab = defineLab({ slug: 'kit-test', build: () => problemApp() });

  it('answers input, conflicts, outages and bugs in one shape, and keeps a bug out of the body', async () => {
    await using running = await startLab(lab);
    const post = (body: string) =>
      fetch(`${running.url}/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const bad = await post('{"name":""}');
    expect(bad.status).toBe(400);
    expect(bad.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(await bad.json()).toMatchObject({
      title: 'Bad Request',
      status: 400,
      errors: [expect.stringMatching(/^name: /)],
    });
    expect((await post('{oops')).status).toBe(400);
    const tooLarge = await post(JSON.stringify({ name: 'x'.repeat(2000) }));
    expect(tooLarge.status).toBe(413);
    expect(((await tooLarge.json()) as { detail: string }).detail).toContain('1024 bytes');
    expect(await (await fetch(`${running.url}/conflict`)).json()).toEqual({
      title: 'Conflict',
      status: 409,
      detail: 'Already there',
      id: 7,
    });
    const down = await fetch(`${running.url}/down`);
    expect(down.status).toBe(503);
    expect(down.headers.get('retry-after')).toBe('3');
    const bug = await fetch(`${running.url}/bug`);
    expect(bug.status).toBe(500);
    expect(await bug.text()).not.toContain('is not a function');
  });
});

describe('problemHandler: the outage policy', () => {
  /** A refused connection as kafkajs reports it: its own error, with the socket's code kept. */
  const kafkaRefused = () =>
    Object.assign(new Error('Connection error: connect ECONNREFUSED 127.0.0.1:9092'), {
      name: 'KafkaJSConnectionError',
      code: 'ECONNREFUSED',
    });
  const socketRefused = () =>
    Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED', syscall: 'connect' });

  it('names the service the error came from, whatever the order of the list, with its Retry-After, and logs at most every 5 s', async () => {
    const lines: string[] = [];
    const bugs: Error[] = [];
    const app = express();
    app.get('/kafka', () => {
      throw kafkaRefused();
    });
    app.get('/database', () => {
      throw fromService('postgres', socketRefused());
    });
    app.get('/bug', () => {
      throw new TypeError('x.y is not a function');
    });
    app.get('/unknown', () => {
      // A route that knows more than the policy says so itself, and what a client can look up.
      throw new ServiceDownError('Not confirmed in time: it may or may not have been queued.', 2, {
        cause: new Error('no confirm'),
        extra: { jobId: 'j1' },
      });
    });
    app.use(
      problemHandler({
        // The database first: its test used to take kafkajs' ECONNREFUSED for its own.
        outages: [
          { test: isPostgresOutage, service: 'The database', retryAfterSec: 2 },
          { test: isKafkaOutage, service: 'Kafka', retryAfterSec: 3 },
        ],
        log: (error) => bugs.push(error),
        logOutage: (line) => lines.push(line),
      }),
    );
    await using server = await listen(app);
    const get = async (path: string) => {
      const res = await fetch(`${server.url}${path}`);
      return {
        status: res.status,
        retryAfter: res.headers.get('retry-after'),
        body: (await res.json()) as { detail?: string },
      };
    };
    const kafka = await get('/kafka');
    expect(kafka).toMatchObject({ status: 503, retryAfter: '3' });
    expect(kafka.body.detail).toMatch(/^Kafka is not answering/);
    const database = await get('/database');
    expect(database).toMatchObject({ status: 503, retryAfter: '2' });
    expect(database.body.detail).toMatch(/^The database is not answering/);
    for (let i = 0; i < 5; i++) expect((await get('/kafka')).status).toBe(503);
    expect((await get('/bug')).status).toBe(500);
    const unknown = await get('/unknown');
    expect(unknown).toMatchObject({ status: 503, retryAfter: '2', body: { jobId: 'j1' } });
    expect(unknown.body.detail).toMatch(/may or may not have been queued/);
    expect(lines.length, `outage lines for 8 outages in a moment: ${lines.join(' | ')}`).toBe(1);
    expect(lines[0]).toMatch(/^Kafka is not answering \(503\)/);
    expect(bugs.map((bug) => bug.message)).toEqual(['x.y is not a function']);
  });
});

describe('atMostEvery', () => {
  it('reports the first call, then at most one per interval, with how many it skipped', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(1_700_000_000_000);
      const lines: string[] = [];
      const report = atMostEvery(5000, (message: string, skipped) => lines.push(`${message} +${skipped}`));
      report('a'); // reported
      report('b');
      vi.setSystemTime(1_700_000_004_999);
      report('c'); // still inside the 5 s
      vi.setSystemTime(1_700_000_005_000);
      report('d'); // reported, two skipped since 'a'
      report('e');
      expect(lines).toEqual(['a +0', 'd +2']);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('openLab', () => {
  it('gives a test its own Redis prefix and database, and removes both when it closes', async () => {
    const lab = defineLab({
      slug: 'kit-test',
      build: () => problemApp(),
    });
    const opened = await openLab(lab);
    const { prefix } = opened.context;
    expect(prefix).toMatch(/^labs:kit-test:test:\w+:$/);
    const redis = await opened.context.redis();
    await redis.set(`${prefix}a`, '1');
    const pool = await opened.context.database();
    const { rows } = await pool.query<{ name: string }>('SELECT current_database() AS name');
    const database = rows[0]!.name;
    const svc = await resolveService('postgres', { log: null });
    await opened.close();

    const check = createRedisClient((await resolveService('redis', { log: null })).url);
    expect(await check.exists(`${prefix}a`)).toBe(0);
    check.disconnect();
    if (svc.provider !== 'embedded') {
      expect(database).toMatch(/^labs_kit_test_test_\w+$/);
      const admin = new pg.Client({ connectionString: svc.url });
      await admin.connect();
      const left = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
      await admin.end();
      expect(left.rowCount).toBe(0);
    }
  });

  it('passes on why a build failed (after closing what it had opened)', async () => {
    const failing = defineLab({
      slug: 'kit-test',
      async build(context) {
        await context.redis();
        throw new Error('the seed data is missing');
      },
    });
    await expect(startLab(failing)).rejects.toThrow('the seed data is missing');
  });
});

// The three limits are waited out side by side (each on a server of its own): one after another they
// were 21 s of this package's run, spent waiting.
describe.concurrent('listen: time limits', () => {
  /**
   * Opens a connection, sends `head` and then nothing more, and waits for the server to close it (or
   * `giveUpMs`). Returns when it closed (undefined if it did not) and what the server wrote.
   */
  const sendAndWait = (url: string, head: string, giveUpMs: number) =>
    new Promise<{ closedAfterMs: number | undefined; received: string }>((resolve) => {
      const { port } = new URL(url);
      const started = performance.now();
      let received = '';
      const socket = connect(Number(port), '127.0.0.1', () => socket.write(head));
      socket.on('data', (chunk) => {
        received += chunk.toString();
      });
      socket.on('error', () => {});
      const timer = setTimeout(() => {
        socket.destroy();
        resolve({ closedAfterMs: undefined, received });
      }, giveUpMs);
      socket.on('close', () => {
        clearTimeout(timer);
        resolve({ closedAfterMs: Math.round(performance.now() - started), received });
      });
    });

  // A limit is enforced by Node's periodic check (every second here), so a connection is closed within
  // a second or so of its limit; the tests allow the limit and 10 s more, for a busy machine.
  const slack = 10_000;

  it('closes a connection whose body never arrives: a request announcing 50 MB and sending 1 KB', async () => {
    const app = express();
    app.use(express.json({ limit: '16kb' })); // as every lab that parses JSON
    app.post('/orders', (_req, res) => {
      res.status(202).end();
    });
    await using server = await listen(app);
    const head = `POST /orders HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\nContent-Length: ${50 * 1024 * 1024}\r\n\r\n{"a":"${'x'.repeat(1000)}`;
    const bound = SERVER_TIME_LIMITS.requestTimeoutMs + slack;
    const { closedAfterMs, received } = await sendAndWait(server.url, head, bound);
    expect(
      closedAfterMs,
      `the connection was still open after ${bound} ms (what came back: ${JSON.stringify(received.slice(0, 60))})`,
    ).toBeDefined();
  }, 60_000);

  it('closes a connection whose headers never end', async () => {
    await using server = await listen((_req, res) => res.end('ok'));
    const bound = SERVER_TIME_LIMITS.headersTimeoutMs + slack;
    const { closedAfterMs } = await sendAndWait(server.url, 'GET / HTTP/1.1\r\nHost: lab\r\nX-Slow: ', bound);
    expect(closedAfterMs, `the connection was still open after ${bound} ms`).toBeDefined();
  }, 60_000);

  it('closes an idle keep-alive connection', async () => {
    await using server = await listen((_req, res) => res.end('ok'));
    const bound = SERVER_TIME_LIMITS.keepAliveTimeoutMs + slack;
    const { closedAfterMs, received } = await sendAndWait(server.url, 'GET / HTTP/1.1\r\nHost: lab\r\n\r\n', bound);
    expect(received, 'the answer').toMatch(/^HTTP\/1\.1 200/);
    expect(closedAfterMs, `the idle connection was still open after ${bound} ms`).toBeDefined();
  }, 60_000);
});
