/** The fixtures leave the shared servers as they found them: what they create, they remove. */
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { resolveService } from '@labs/services';
import { listen, PortInUseError, usePostgres, useRedis } from '../src/index.ts';
import { exerciseAliases } from '../src/vitest-config.ts';

describe('useRedis', () => {
  it('hands out a private prefix and deletes every key under it on dispose', async () => {
    let prefix: string;
    const { url } = await resolveService('redis', { log: null });
    {
      await using redis = await useRedis();
      prefix = redis.prefix;
      const other = redis.connect();
      await redis.client.set(`${prefix}a`, '1');
      await other.set(`${prefix}b`, '2');
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

  it('on a port that is taken, fails with a PortInUseError that names the next port to try', async () => {
    await using taken = await listen((_req, res) => res.end('first'));
    const port = Number(new URL(taken.url).port);
    const attempt = listen((_req, res) => res.end('second'), port);
    await expect(attempt).rejects.toBeInstanceOf(PortInUseError);
    await expect(attempt).rejects.toThrow(
      `Port ${port} is already in use. Stop what runs there, or try another: --port ${port + 1}`,
    );
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
