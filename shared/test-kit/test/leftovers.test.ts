/**
 * A database whose creator was killed is dropped by the next run's set-up; one whose creator lives, or
 * that someone is connected to, or that is not a run's, stays.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisClient, dropDatabase, ensureDatabase, resolveService, stopServices } from '@labs/services';
import { creatorPid, deleteLeftoverKeys, dropLeftoverDatabases } from '../src/leftovers.ts';

afterAll(stopServices);

/** A pid that was a process of this machine a moment ago and is not any more. */
function deadPid(): number {
  const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(gone.stdout);
}

/** A run database's id for `pid`, as the lab kit's uniqueId spells one. */
const idOf = (pid: number) => `${pid.toString(36)}${randomBytes(4).toString('hex')}`;

describe('creatorPid', () => {
  it("reads the pid out of a run database's name, and nothing out of any other", () => {
    expect(creatorPid(`labs_test_${idOf(4242)}`)).toBe(4242);
    expect(creatorPid(`labs_sharding_test_${idOf(77)}_starter_shard_0`)).toBe(77);
    expect(creatorPid(`labs_caching_bench_${idOf(9)}`)).toBe(9);
    expect(creatorPid('labs_rate_limiter')).toBeUndefined(); // serve's, kept on purpose
    expect(creatorPid('labs_test_notanid')).toBeUndefined();
  });
});

describe('dropLeftoverDatabases', () => {
  it("drops a killed run's database, and keeps a live run's and one in use", async (context) => {
    const svc = await resolveService('postgres');
    if (svc.provider === 'embedded') context.skip(); // one private engine: nothing is left on a server
    const orphan = `labs_test_${idOf(deadPid())}`;
    const live = `labs_test_${idOf(process.pid)}`;
    const inUse = `labs_test_${idOf(deadPid())}`;
    await ensureDatabase(svc.url, orphan);
    await ensureDatabase(svc.url, live);
    const holder = new pg.Client({ connectionString: await ensureDatabase(svc.url, inUse) });
    await holder.connect();
    try {
      const dropped = await dropLeftoverDatabases(svc.url);
      expect(dropped).toContain(orphan);
      expect(dropped).not.toContain(live);
      expect(dropped).not.toContain(inUse);
      const admin = new pg.Client({ connectionString: svc.url });
      await admin.connect();
      const { rows } = await admin.query<{ datname: string }>(
        'SELECT datname FROM pg_database WHERE datname = ANY($1)',
        [[orphan, live, inUse]],
      );
      await admin.end();
      expect(rows.map((r) => r.datname).sort()).toEqual([inUse, live].sort());
    } finally {
      await holder.end();
      await dropDatabase(svc.url, live);
      await dropDatabase(svc.url, inUse);
      await dropDatabase(svc.url, orphan);
    }
  }, 120_000); // a hang guard: the sweep drops whatever else killed runs left on this server too
});

describe('deleteLeftoverKeys', () => {
  it("deletes the keys under a killed run's prefix, and keeps a live run's and serve's", async () => {
    const svc = await resolveService('redis');
    const redis = createRedisClient(svc.url);
    const orphan = `labs:demo:test:${idOf(deadPid())}:`;
    const live = `labs:demo:test:${idOf(process.pid)}:`;
    const fixture = `labs:test:${idOf(deadPid())}:`;
    const serve = `labs:demo-${randomBytes(4).toString('hex')}:serve:`;
    try {
      for (const prefix of [orphan, live, fixture, serve]) await redis.set(`${prefix}room:1`, 'x', 'EX', 60);
      const swept = await deleteLeftoverKeys(svc.url);
      expect(swept).toEqual(expect.arrayContaining([orphan, fixture]));
      expect(swept).not.toContain(live);
      expect(await redis.exists(`${orphan}room:1`, `${fixture}room:1`)).toBe(0);
      expect(await redis.exists(`${live}room:1`, `${serve}room:1`)).toBe(2);
    } finally {
      await redis.del(...[orphan, live, fixture, serve].map((prefix) => `${prefix}room:1`));
      redis.disconnect();
    }
  }, 120_000); // a hang guard, as above
});
