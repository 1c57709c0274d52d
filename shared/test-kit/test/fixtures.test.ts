/** The fixtures leave the shared servers as they found them: what they create, they remove. */
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { Kafka, logLevel } from 'kafkajs';
import { resolveService, ServiceUnavailableError, stopServices } from '@labs/services';
import { listen, PortInUseError, useKafka, usePostgres, useRedis, type KafkaFixture } from '../src/index.ts';
import { exerciseAliases } from '../src/vitest-config.ts';

// A server this file started (a Kafka broker from .tools/kafka) must stop with it: vitest ends its
// workers with SIGTERM, which skips the exit hooks that would otherwise stop it.
afterAll(stopServices);

describe('useRedis', () => {
  it('hands out a private prefix and deletes every key under it on dispose', async () => {
    let prefix: string;
    const { url } = await resolveService('redis', { log: null });
    {
      await using redis = await useRedis();
      prefix = redis.prefix;
      const other = redis.connect();
      await redis.client.set(`${prefix}a`, '1', 'PX', 60_000);
      await other.set(`${prefix}b`, '2', 'PX', 60_000);
      expect(await redis.client.exists(`${prefix}a`, `${prefix}b`)).toBe(2);
    }
    const { createRedisClient } = await import('@labs/services');
    const check = createRedisClient(url);
    expect(await check.keys(`${prefix}*`)).toEqual([]);
    await check.quit();
  });
});

describe('usePostgres', () => {
  it('creates a fresh database and drops it on dispose, even with a connection left open', async () => {
    let name: string;
    let leaked: pg.Client;
    {
      await using db = await usePostgres();
      name = new URL(db.url).pathname.slice(1);
      leaked = new pg.Client({ connectionString: db.url });
      leaked.on('error', () => {}); // DROP ... WITH (FORCE) terminates it: that is the point
      await leaked.connect();
      await leaked.query('CREATE TABLE t (id int)');
      expect((await leaked.query('SELECT count(*)::int AS n FROM t')).rows[0].n).toBe(0);
    }
    const svc = await resolveService('postgres', { log: null });
    const admin = new pg.Client({ connectionString: svc.url });
    await admin.connect();
    const { rows } = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    await admin.end();
    await leaked.end().catch(() => undefined);
    expect(rows).toEqual([]);
  });
});

describe('useKafka', () => {
  /** Kafka's address, or undefined where none can be had (no Java here): CI always has one. */
  async function kafkaOrSkip(): Promise<string | undefined> {
    try {
      return (await resolveService('kafka', { log: null })).url;
    } catch (error) {
      if (!(error instanceof ServiceUnavailableError)) throw error;
      console.warn(`No Kafka here, useKafka is not tested: ${error.message.split('\n').at(-1)}`);
      expect(process.env.CI, 'CI must test useKafka: run ./lab setup kafka first').not.toBe('true');
      return undefined;
    }
  }

  /** The topics and groups under `prefix` that the broker still has. */
  async function leftovers(url: string, prefix: string) {
    const admin = new Kafka({ brokers: [url], logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    try {
      const topics = (await admin.listTopics()).filter((t) => t.startsWith(prefix));
      const groups = (await admin.listGroups()).groups.map((g) => g.groupId).filter((g) => g.startsWith(prefix));
      return { topics, groups };
    } finally {
      await admin.disconnect();
    }
  }

  it('hands out private names and connected clients; on dispose, after a failed test too, disconnects them and deletes its topics and groups', async (ctx) => {
    const url = await kafkaOrSkip();
    if (!url) return ctx.skip();
    let fixture: KafkaFixture | undefined;
    let consumerStopped = false;
    const failingTest = async () => {
      await using kafka = await useKafka();
      fixture = kafka;
      const topic = kafka.topic('orders');
      const groupId = kafka.groupId('billing');
      expect(topic.startsWith(kafka.prefix) && groupId.startsWith(kafka.prefix)).toBe(true);
      expect(kafka.topic('orders')).toBe(topic);

      const producer = await kafka.producer();
      await producer.send({ topic, messages: [{ key: 'order-1', value: 'placed' }] }); // auto-creates the topic
      const consumer = await kafka.consumer(groupId);
      consumer.on(consumer.events.DISCONNECT, () => (consumerStopped = true));
      await consumer.subscribe({ topic, fromBeginning: true });
      const first = new Promise<string>(
        (resolve) => void consumer.run({ eachMessage: async ({ message }) => resolve(message.value!.toString()) }),
      );
      expect(await first).toBe('placed');
      throw new Error('the test fails with its consumer still running');
    };
    await expect(failingTest()).rejects.toThrow('the test fails with its consumer still running');
    expect(consumerStopped).toBe(true);
    // The broker applies a deletion a moment after it acknowledges it.
    await vi.waitFor(async () => expect(await leftovers(url, fixture!.prefix)).toEqual({ topics: [], groups: [] }), {
      timeout: 5000,
    });
  }, 60_000);

  it('gives each fixture its own prefix', async (ctx) => {
    if (!(await kafkaOrSkip())) return ctx.skip();
    await using a = await useKafka();
    await using b = await useKafka();
    expect(a.prefix).not.toBe(b.prefix);
    expect(a.topic('t')).not.toBe(b.topic('t'));
  }, 60_000);
});

describe('listen', () => {
  it('serves an app on a free loopback port and closes it on dispose', async () => {
    let url: string;
    {
      await using server = await listen((_req, res) => res.end('hi'));
      url = server.url;
      expect(await (await fetch(url)).text()).toBe('hi');
    }
    await expect(fetch(url)).rejects.toThrow();
  });

  it('on a port that is taken, fails with a PortInUseError naming a port that really is free', async () => {
    await using taken = await listen((_req, res) => res.end('first'));
    const port = Number(new URL(taken.url).port);
    // The next port is taken too: the suggestion must skip it.
    await using next = await listen((_req, res) => res.end('next'), port + 1).catch(() => undefined);
    const attempt = listen((_req, res) => res.end('second'), port);
    await expect(attempt).rejects.toBeInstanceOf(PortInUseError);
    const message = await attempt.then(
      () => '',
      (error: Error) => error.message,
    );
    expect(message).toMatch(
      new RegExp(`^Port ${port} is already in use\\. Stop what runs there, or use another: --port \\d+`),
    );
    const suggested = Number(/--port (\d+)/.exec(message)?.[1]);
    if (next) expect(suggested).not.toBe(port + 1);
    await using works = await listen((_req, res) => res.end('third'), suggested);
    expect(await (await fetch(works.url)).text()).toBe('third');
    expect(await (await fetch(taken.url)).text()).toBe('first');
  });
});

describe('exerciseAliases', () => {
  it("points a lab's # imports at src/ for the starter and solution/ for the solution", () => {
    const lab = join(import.meta.dirname, '..', '..', '..', 'labs', 'rate-limiter');
    expect(exerciseAliases(lab, 'starter')).toEqual([
      { find: '#rate-limiter', replacement: join(lab, 'src', 'rate-limiter.ts') },
    ]);
    expect(exerciseAliases(lab, 'solution')).toEqual([
      { find: '#rate-limiter', replacement: join(lab, 'solution', 'rate-limiter.ts') },
    ]);
  });
});
