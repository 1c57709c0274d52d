import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DistanceError, distanceLabel, openDistance, parseDistances } from '../src/distance.ts';
import { type DistanceRecord, forkServers, withDistance } from '../src/index.ts';

describe('--latency values', () => {
  it('reads service=duration pairs, with optional jitter', () => {
    expect(parseDistances('postgres=1ms,redis=0.5ms')).toEqual({
      postgres: { latencyMs: 1, jitterMs: 0 },
      redis: { latencyMs: 0.5, jitterMs: 0 },
    });
    expect(parseDistances('rabbitmq=250us~100us')).toEqual({ rabbitmq: { latencyMs: 0.25, jitterMs: 0.1 } });
    expect(parseDistances(' redis = 2 ')).toEqual({ redis: { latencyMs: 2, jitterMs: 0 } });
  });

  it.each([
    ['', /service=duration pairs/],
    ['postgres', /not service=duration/],
    ['postgres=', /not service=duration/],
    ['postgres=fast', /duration such as 1ms/],
    ['postgres=-1ms', /duration such as 1ms/],
    ['postgres=1ms=2ms', /not service=duration/],
    ['postgres=1h', /duration such as 1ms/],
    ['postgres=1ms,postgres=2ms', /given twice/],
  ])('rejects %j with a message saying what is wrong', (value, message) => {
    expect(() => parseDistances(value)).toThrow(DistanceError);
    expect(() => parseDistances(value)).toThrow(message);
  });

  it('rejects an unknown service with the list of those it knows, and explains kafka', () => {
    expect(() => parseDistances('mysql=1ms')).toThrow(
      'unknown service "mysql"; the latency proxy stands in front of: redis, postgres, rabbitmq.',
    );
    expect(() => parseDistances('kafka=1ms')).toThrow(/advertises/);
  });

  it('labels rows with the distance', () => {
    expect(distanceLabel({ postgres: 1 })).toBe('(db 1 ms away)');
    expect(distanceLabel({ postgres: 1, redis: 0.5 })).toBe('(db 1 ms, redis 0.5 ms away)');
    expect(distanceLabel({ redis: { latencyMs: 1, jitterMs: 0.2 } })).toBe('(redis 1 ms ±0.2 ms away)');
    expect(distanceLabel({})).toBe('(loopback)');
  });
});

describe('services at a distance', () => {
  let echo: Server;
  let echoPort = 0;
  const echoSockets = new Set<Socket>();
  const saved = process.env.REDIS_URL;
  beforeEach(async () => {
    echo = createServer((socket) => {
      echoSockets.add(socket);
      socket.once('close', () => echoSockets.delete(socket));
      socket.on('error', () => socket.destroy());
      socket.pipe(socket);
    });
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    echoPort = (echo.address() as AddressInfo).port;
    // A stand-in for Redis: the proxy only carries bytes.
    process.env.REDIS_URL = `redis://:secret@127.0.0.1:${echoPort}/3`;
  });
  afterEach(async () => {
    if (saved === undefined) delete process.env.REDIS_URL;
    else process.env.REDIS_URL = saved;
    for (const socket of echoSockets) socket.destroy();
    await new Promise((resolve) => echo.close(resolve));
  });

  async function roundTrip(url: string): Promise<string> {
    const { hostname, port } = new URL(url);
    const socket = connect({ host: hostname, port: Number(port) });
    await once(socket, 'connect');
    socket.write('PING');
    const [answer] = (await once(socket, 'data')) as [Buffer];
    socket.destroy();
    return answer.toString();
  }

  it('withDistance runs the proxies in a process of their own and hands out the URLs through them', async () => {
    let proxied = '';
    let record: DistanceRecord | undefined;
    {
      await using far = await withDistance({ redis: 1 });
      record = far.record;
      proxied = far.env.REDIS_URL ?? '';
      expect(proxied).toMatch(/^redis:\/\/:secret@127\.0\.0\.1:\d+\/3$/);
      expect(proxied).not.toContain(`:${echoPort}/`);
      expect(far.label).toBe('(redis 1 ms away)');
      expect(await roundTrip(proxied)).toBe('PING');
      const lines = far.describe().join('\n');
      expect(lines).toContain('Simulated distance: Redis 1 ms away (+1 ms each way, +2 ms per round trip)');
      expect(lines).toMatch(/proxy overhead: \d+ µs per round trip/);
      expect((await far.applied()).join('\n')).toMatch(/Redis proxy: 1 connections, 2 chunks held/);
      // One message sent and waited on: one round trip, as a load script counts them.
      expect((await far.stats()).redis?.upstream.chunks).toBe(1);
    }
    // Closed with its owner: nothing listens there any more.
    await expect(roundTrip(proxied)).rejects.toThrow(/ECONNREFUSED/);
    // Recorded for the report, with the delay the proxy really applied (at least what was asked).
    expect(record?.label).toBe('(redis 1 ms away)');
    expect(record?.services.redis?.appliedMeanDelayMs).toBeGreaterThanOrEqual(1);
  });

  it('withDistance({}) is loopback: no proxy, nothing to override', async () => {
    await using near = await withDistance({});
    expect(near.env).toEqual({});
    expect(near.label).toBe('(loopback)');
  });

  it('says what to do when the service URL is not in the environment', async () => {
    const databaseUrl = process.env.DATABASE_URL;
    delete process.env.DATABASE_URL;
    try {
      await expect(withDistance({ postgres: 1 })).rejects.toThrow(/DATABASE_URL is not set.*lab bench/);
    } finally {
      if (databaseUrl !== undefined) process.env.DATABASE_URL = databaseUrl;
    }
  });

  it('openDistance runs the proxies in this process (lab serve --latency)', async () => {
    await using far = await openDistance({ redis: 0 }, process.env);
    const url = far.env.REDIS_URL ?? '';
    expect(await roundTrip(url)).toBe('PING');
    expect(far.proxies.get('redis')?.stats().accepted).toBe(1);
  });

  it("forkServers hands its env option to the servers' process", async () => {
    const module = new URL('./fixtures/env-servers.ts', import.meta.url);
    await using plain = await forkServers(module);
    expect(plain.urls.fromEnv).toBe('unset');
    await using given = await forkServers(module, {}, { env: { BENCH_FIXTURE_VALUE: 'through the proxy' } });
    expect(given.urls.fromEnv).toBe('through the proxy');
  });
});
