/**
 * Service resolution, path by path. Each provider is forced with LABS_PROVIDER so every path runs here,
 * whatever else the machine has. Tests assert what answers, not how fast.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  childServiceEnv,
  forcedProvider,
  probe,
  resolveService,
  ServiceUnavailableError,
  stopServices,
  type ResolvedService,
} from '../src/index.ts';
import { onFreshPorts } from '../src/providers/binary.ts';
import { findBinary, freePort } from '../src/providers/server-process.ts';
import { skip, type Attempt } from '../src/providers/types.ts';

/** Owner processes started by a test, and their private temporary folders: gone after each test. */
const owners: ChildProcess[] = [];
const ownerTmps: string[] = [];
afterEach(async () => {
  // An owner a failed test did not kill would keep its server, and this run's stderr, open for good.
  for (const owner of owners.splice(0)) if (owner.exitCode === null && owner.signalCode === null) owner.kill('SIGKILL');
  for (const dir of ownerTmps.splice(0)) rmSync(dir, { recursive: true, force: true });
  await stopServices();
  vi.unstubAllEnvs();
});

describe('LABS_PROVIDER', () => {
  it('forces one provider for every service, or one per service', () => {
    expect(forcedProvider('redis', 'embedded')).toBe('embedded');
    expect(forcedProvider('redis', 'postgres:embedded,redis:binary')).toBe('binary');
    expect(forcedProvider('rabbitmq', 'postgres:embedded,redis:binary')).toBeUndefined();
    expect(forcedProvider('redis', '')).toBeUndefined();
  });

  it('rejects an unknown provider name with the list of known ones', () => {
    expect(() => forcedProvider('redis', 'dockr')).toThrow(
      /unknown provider "dockr".*env, local-port, container, binary, embedded/,
    );
  });
});

describe('childServiceEnv', () => {
  const found = (kind: ResolvedService['kind'], provider: ResolvedService['provider'], url: string) =>
    ({ kind, provider, url }) as ResolvedService;

  it('hands each URL over in its own variable and pins the child to it, quietly', () => {
    const env = childServiceEnv([
      found('redis', 'local-port', 'redis://127.0.0.1:6379'),
      found('postgres', 'embedded', 'postgres://127.0.0.1:4000/postgres'),
    ]);
    expect(env).toEqual({
      REDIS_URL: 'redis://127.0.0.1:6379',
      DATABASE_URL: 'postgres://127.0.0.1:4000/postgres',
      LABS_PROVIDER: 'redis:env,postgres:env',
      LABS_QUIET: '1',
    });
  });

  it('with embeddedInChild, tells the child to start its own embedded engine instead', () => {
    const env = childServiceEnv(
      [
        found('redis', 'binary', 'redis://127.0.0.1:7000'),
        found('postgres', 'embedded', 'postgres://127.0.0.1:4000/postgres'),
      ],
      { embeddedInChild: true },
    );
    expect(env).toEqual({
      REDIS_URL: 'redis://127.0.0.1:7000',
      LABS_PROVIDER: 'redis:env,postgres:embedded',
      LABS_QUIET: '1',
    });
  });
});

describe('probe', () => {
  it('says no for a closed port', async () => {
    expect(await probe('redis', '127.0.0.1', 1, 1000)).toBe(false);
  });

  it('says no when something that is not the service answers (an HTTP server on the port)', async () => {
    const http = createServer((_req, res) => res.end('hello'));
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    const { port } = http.address() as AddressInfo;
    try {
      expect(await probe('redis', '127.0.0.1', port, 1000)).toBe(false);
      expect(await probe('postgres', '127.0.0.1', port, 1000)).toBe(false);
    } finally {
      http.close();
    }
  });
});

describe('the env provider', () => {
  it('fails fast with a clear message when the configured URL does not answer', { timeout: 5000 }, async () => {
    vi.stubEnv('LABS_PROVIDER', '');
    vi.stubEnv('REDIS_URL', 'redis://127.0.0.1:1');
    const failure = resolveService('redis', { log: null });
    await expect(failure).rejects.toBeInstanceOf(ServiceUnavailableError);
    await expect(failure).rejects.toThrow(
      /Redis at REDIS_URL=redis:\/\/127\.0\.0\.1:1 does not answer[\s\S]*docker compose up -d --wait redis/,
    );
  });

  it('rejects a URL that is not a URL', async () => {
    vi.stubEnv('LABS_PROVIDER', '');
    vi.stubEnv('DATABASE_URL', 'not a url');
    await expect(resolveService('postgres', { log: null })).rejects.toThrow(
      /DATABASE_URL="not a url" is not a valid PostgreSQL URL/,
    );
  });
});

describe('when nothing provides a service', () => {
  it('names every provider it tried and the one command that provides it', async () => {
    vi.stubEnv('LABS_PROVIDER', 'embedded');
    await expect(resolveService('redis', { log: null })).rejects.toThrow(
      /Redis is not available \(LABS_PROVIDER forces "embedded"\)[\s\S]*embedded: there is no embedded engine for redis[\s\S]*Get it with: docker compose up -d --wait redis/,
    );
  });
});

describe('the embedded provider', () => {
  it('serves PGlite over the Postgres wire protocol, reachable with pg, and stops it', async () => {
    vi.stubEnv('LABS_PROVIDER', 'postgres:embedded');
    const svc = await resolveService('postgres', { log: null });
    expect(svc.provider).toBe('embedded');
    const pool = new pg.Pool({ connectionString: svc.url, max: 3 });
    // Several connections at once: pglite-socket multiplexes them onto its one session.
    const rows = await Promise.all(
      [1, 2, 3].map(async (n) => (await pool.query('SELECT $1::int * 2 AS v', [n])).rows[0].v),
    );
    expect(rows).toEqual([2, 4, 6]);
    await pool.end();
    const { port } = new URL(svc.url);
    await stopServices();
    expect(await probe('postgres', '127.0.0.1', Number(port), 500)).toBe(false);
  });
});

describe('freePort', () => {
  // A port from the ephemeral range can become some outgoing connection's source port in the seconds
  // before a slow server (RabbitMQ) binds it: CI saw could_not_start_listener once for that.
  // A machine whose range starts low (some containers hand out almost every port) leaves nothing below
  // it to pick: freePort then takes the kernel's choice, and this test has nothing to check.
  const floor = existsSync(EPHEMERAL_RANGE) ? Number(readFileSync(EPHEMERAL_RANGE, 'utf8').trim().split(/\s+/)[0]) : 0;
  it.skipIf(!(floor > 11_000))('picks ports below the range outgoing connections use, free to listen on', async () => {
    const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
    for (const port of ports) {
      expect(port).toBeLessThan(floor);
      expect(await probe('redis', '127.0.0.1', port, 300)).toBe(false);
    }
  });
});

describe('a server that lost its port before binding it', () => {
  const answers = (reasons: string[]) => {
    let calls = 0;
    const start = async (): Promise<Attempt> => {
      const reason = reasons[calls++];
      return reason === undefined ? { ok: true, service: {} as ResolvedService } : skip(reason);
    };
    return { start, calls: () => calls };
  };

  it('is started again on new ports, up to three times in all', async () => {
    const twice = answers([
      'rabbitmq-server exited with code 0: {could_not_start_listener,127.0.0.1,38269,...}',
      'redis-server exited with code 1: Could not create server TCP listening socket: Address already in use',
    ]);
    expect((await onFreshPorts(twice.start)).ok).toBe(true);
    expect(twice.calls()).toBe(3);
    const always = answers(Array(5).fill('postgres exited with code 1: could not bind IPv4 address: EADDRINUSE'));
    expect((await onFreshPorts(always.start)).ok).toBe(false);
    expect(always.calls()).toBe(3);
  });

  it('is not started again for any other failure', async () => {
    const other = answers(['rabbitmq-server did not answer within 45 s']);
    expect(await onFreshPorts(other.start)).toEqual(skip('rabbitmq-server did not answer within 45 s'));
    expect(other.calls()).toBe(1);
  });
});

const EPHEMERAL_RANGE = '/proc/sys/net/ipv4/ip_local_port_range';

/** Servers the binary provider starts beside any system one: each answers its protocol on a port of its own, then stops. */
const BROKER_BINARIES = [
  { kind: 'redis', binary: 'redis-server', dirs: [], standardPort: 6379 },
  { kind: 'rabbitmq', binary: 'rabbitmq-server', dirs: ['/usr/sbin', '/usr/lib/rabbitmq/bin'], standardPort: 5672 },
] as const;

for (const { kind, binary, dirs, standardPort } of BROKER_BINARIES) {
  describe.skipIf(!findBinary(binary, [...dirs]))(`the binary provider: ${binary}`, () => {
    it(`starts ${binary} on a free port beside any system one, answers its protocol, and stops it`, async () => {
      vi.stubEnv('LABS_PROVIDER', `${kind}:binary`);
      const svc = await resolveService(kind, { log: null });
      expect(svc.provider).toBe('binary');
      const port = Number(new URL(svc.url).port);
      expect(port).not.toBe(standardPort);
      expect(await probe(kind, '127.0.0.1', port, 1000)).toBe(true);
      await stopServices();
      expect(await probe(kind, '127.0.0.1', port, 500)).toBe(false);
    }, 60_000);
  });
}

/**
 * A separate Node process that resolves `kind` with the binary step, prints its URL and waits; returns
 * it with that URL and the labs-* folders it made in the temporary folder. SIGKILL runs none of its
 * exit handlers: only the watchdog can stop its server and remove its folder.
 */
async function ownerOf(kind: 'redis' | 'postgres') {
  // A temporary folder of its own (TMPDIR), so the folders it makes are told apart from those that
  // other tests and other runs on this machine make at the same time; PostgreSQL (run as the postgres
  // user under root) must be able to enter it.
  const tmp = mkdtempSync(join(tmpdir(), 'owner-tmp-'));
  chmodSync(tmp, 0o755);
  ownerTmps.push(tmp);
  const owner = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const { resolveService } = await import(${JSON.stringify(new URL('../src/index.ts', import.meta.url).href)});
       const svc = await resolveService(${JSON.stringify(kind)}, { log: null });
       console.log(svc.url);
       setInterval(() => {}, 1000);`,
    ],
    { env: { ...process.env, TMPDIR: tmp, LABS_PROVIDER: `${kind}:binary` }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  owners.push(owner);
  const [line] = (await once(createInterface({ input: owner.stdout! }), 'line')) as [string];
  const folders = readdirSync(tmp).filter((f) => f.startsWith('labs-'));
  return { owner, port: Number(new URL(line).port), folders: folders.map((f) => join(tmp, f)) };
}

/** Polls `check` every 250 ms for up to 10 s (the watchdog looks once a second, then allows a 5 s shutdown). */
async function within10s(check: () => Promise<boolean> | boolean): Promise<boolean> {
  for (let tries = 0; tries < 40; tries++) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return check();
}

describe.skipIf(!findBinary('redis-server'))('a server whose owner is killed outright', () => {
  it('is stopped by its watchdog: a SIGKILLed owner leaves no redis-server behind', async () => {
    const { owner, port } = await ownerOf('redis');
    expect(await probe('redis', '127.0.0.1', port, 1000)).toBe(true);
    owner.kill('SIGKILL');
    const stopped = await within10s(async () => !(await probe('redis', '127.0.0.1', port, 250)));
    expect(stopped, `redis-server on ${port} still answers 10 s after its owner was killed`).toBe(true);
  }, 30_000);
});

describe.skipIf(
  !findBinary('initdb', ['/usr/lib/postgresql/15/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/17/bin']),
)('the binary provider: postgres', () => {
  it('initialises a throwaway cluster, serves queries, and removes it', async () => {
    vi.stubEnv('LABS_PROVIDER', 'postgres:binary');
    const svc = await resolveService('postgres', { log: null });
    expect(svc.provider).toBe('binary');
    const client = new pg.Client({ connectionString: svc.url });
    await client.connect();
    expect((await client.query('SELECT 40 + 2 AS v')).rows[0].v).toBe(42);
    await client.end();
  }, 30_000);

  it('leaves neither a server nor its folder (tens of MB) behind when its owner is SIGKILLed', async () => {
    const { owner, port, folders } = await ownerOf('postgres');
    expect(folders, 'the cluster lives in a labs-postgres-* folder of its own').toHaveLength(1);
    owner.kill('SIGKILL');
    expect(await within10s(async () => !(await probe('postgres', '127.0.0.1', port, 250)))).toBe(true);
    expect(await within10s(() => !existsSync(folders[0]!)), `${folders[0]} is still there`).toBe(true);
  }, 40_000);
});
