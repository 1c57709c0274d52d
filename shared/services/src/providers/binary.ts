/**
 * Step 4: a server binary already installed on the machine (redis-server, postgres, rabbitmq-server,
 * Apache Kafka), started on a free port in a temporary directory and stopped when the process exits.
 */
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { kafkaBinary } from './kafka-binary.ts';
import pg from 'pg';
import { findBinary, freePort, ownedTempDir, startChild, waitForServer } from './server-process.ts';
import { service, skip, type Attempt, type Provider } from './types.ts';

/** Debian and Ubuntu keep postgres and initdb off PATH, under /usr/lib/postgresql/<major>/bin. */
function postgresBinDirs(): string[] {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .sort((a, b) => Number(b) - Number(a))
    .map((major) => join(root, major, 'bin'));
}

async function redisBinary(): Promise<Attempt> {
  const bin = findBinary('redis-server');
  if (!bin) return skip('redis-server is not on PATH');
  const port = await freePort();
  const proc = startChild(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {});
  try {
    await waitForServer('redis', port, proc.child, 5000, proc.log);
  } catch (err) {
    await proc.stop();
    return skip(`redis-server ${(err as Error).message}`);
  }
  return {
    ok: true,
    service: service('redis', 'binary', `redis://127.0.0.1:${port}`, `redis-server on 127.0.0.1:${port}`, proc.stop),
  };
}

/** Postgres refuses to run as root; when we are root we run it as the distribution's `postgres` user. */
function postgresUser(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined;
  const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (id.status !== 0 || gid.status !== 0) return undefined;
  return { uid: Number(id.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

async function postgresBinary(): Promise<Attempt> {
  const initdb = findBinary('initdb', postgresBinDirs());
  const postgres = findBinary('postgres', postgresBinDirs());
  if (!initdb || !postgres) return skip('initdb/postgres are not installed');
  const asUser = postgresUser();
  if (userInfo().uid === 0 && !asUser)
    return skip('running as root and there is no postgres user to run the server as');
  // Owned from its first moment: a SIGKILL during initdb leaves no 50 MB cluster behind.
  const folder = ownedTempDir('labs-postgres-');
  const dir = folder.path;
  if (asUser) chownSync(dir, asUser.uid, asUser.gid);
  const data = join(dir, 'data');
  const init = spawnSync(initdb, ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync'], {
    ...asUser,
    encoding: 'utf8',
  });
  if (init.status !== 0) {
    folder.remove();
    return skip(`initdb failed: ${(init.stderr || init.stdout || '').trim().split('\n').slice(-2).join(' | ')}`);
  }
  const port = await freePort();
  // Durability off: this server lives for one test run and holds nothing worth keeping.
  const args = [
    '-D',
    data,
    '-p',
    String(port),
    '-k',
    dir,
    '-c',
    'listen_addresses=127.0.0.1',
    '-c',
    'fsync=off',
    '-c',
    'synchronous_commit=off',
    '-c',
    'full_page_writes=off',
  ];
  // With `dir`, the folder goes with the server: on stop(), on our exit, and after a SIGKILL of ours (the watchdog).
  const proc = startChild(postgres, args, { ...asUser, dir: folder });
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  try {
    await waitForServer('postgres', port, proc.child, 15_000, proc.log);
    await untilQueriesAnswer(url, 15_000);
  } catch (err) {
    await proc.stop();
    return skip(`postgres ${(err as Error).message}`);
  }
  return {
    ok: true,
    service: service('postgres', 'binary', url, `postgres (${postgres}) on 127.0.0.1:${port}`, proc.stop),
  };
}

/**
 * PostgreSQL answers the protocol's first message while it is still recovering ("the database system is
 * starting up", 57P03): ready means a query is served, so the learner's first one cannot meet that.
 */
async function untilQueriesAnswer(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
    client.on('error', () => {}); // a connection the server drops while starting: tried again below
    try {
      await client.connect();
      await client.query('SELECT 1');
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`did not serve a query within ${timeoutMs / 1000} s: ${error}`);
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

async function rabbitmqBinary(): Promise<Attempt> {
  // Debian's /usr/sbin/rabbitmq-server is a wrapper that, run as root, switches to the rabbitmq user,
  // who cannot write our temporary folder; the real script behind it runs as whoever starts it.
  const debianScript = '/usr/lib/rabbitmq/bin/rabbitmq-server';
  const bin = existsSync(debianScript) ? debianScript : findBinary('rabbitmq-server', ['/usr/sbin']);
  if (!bin) return skip('rabbitmq-server is not installed');
  const port = await freePort();
  const distPort = await freePort();
  const folder = ownedTempDir('labs-rabbitmq-');
  const dir = folder.path;
  writeFileSync(join(dir, 'enabled_plugins'), '[].\n');
  const env = {
    ...process.env,
    HOME: dir, // its own Erlang cookie, so it never clashes with a system node
    RABBITMQ_NODENAME: `labs${port}@localhost`,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq'),
  };
  const proc = startChild(bin, [], { env, cwd: dir, dir: folder });
  const { stop } = proc;
  try {
    await waitForServer('rabbitmq', port, proc.child, 45_000, proc.log);
  } catch (err) {
    await stop();
    return skip(`rabbitmq-server ${(err as Error).message}`);
  }
  return {
    ok: true,
    service: service(
      'rabbitmq',
      'binary',
      `amqp://guest:guest@127.0.0.1:${port}`,
      `rabbitmq-server on 127.0.0.1:${port}`,
      stop,
    ),
  };
}

/** Starts the installed server binary for `kind` on a free port. */
export const fromBinary: Provider = async (kind) => {
  switch (kind) {
    case 'redis':
      return onFreshPorts(redisBinary);
    case 'postgres':
      return onFreshPorts(postgresBinary);
    case 'rabbitmq':
      return onFreshPorts(rabbitmqBinary);
    case 'kafka':
      return onFreshPorts(kafkaBinary);
  }
};

/** How each server says another process took its port between our choosing it and its own bind. */
const PORT_TAKEN = /could_not_start_listener|eaddrinuse|address already in use|BindException/i;

/**
 * Starts a server again on newly chosen ports when it lost the ones it was given: rare since
 * {@link freePort} keeps out of the range outgoing connections use, but another program may still pick
 * the same port in the seconds before a slow server binds it.
 */
export async function onFreshPorts(start: () => Promise<Attempt>, tries = 3): Promise<Attempt> {
  for (let attempt = 1; ; attempt++) {
    const outcome = await start();
    if (outcome.ok || attempt === tries || !PORT_TAKEN.test(outcome.reason)) return outcome;
  }
}
