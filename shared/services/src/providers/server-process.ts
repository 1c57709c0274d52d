/**
 * What every server the binary step starts has in common: a free port, a child in its own process
 * group (so stopping it also stops what it forked: beam and epmd, a JVM), waiting until it answers its
 * protocol, and stopping it, SIGKILL after a grace, even when the process exits without asking, and
 * even when it is killed outright (a watchdog outlives it, see {@link watchOwner}).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import type { ServiceKind } from '../kinds.ts';
import { probe } from '../probe.ts';

/** Full path of `name` on PATH (or in the extra folders), or undefined. */
export function findBinary(name: string, extraDirs: string[] = []): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), ...extraDirs];
  return dirs.map((dir) => join(dir, name)).find((file) => existsSync(file));
}

/**
 * A TCP port nobody is listening on right now, picked below the kernel's ephemeral range. A server we
 * start binds its port seconds after we chose it (RabbitMQ takes ten), and a port from that range can
 * meanwhile become the source port of any outgoing connection on the machine (our labs make thousands),
 * which fails the server's bind. Ports below the range are only ever taken on purpose.
 */
export async function freePort(): Promise<number> {
  const floor = ephemeralFloor();
  if (floor > LOWEST_PICKED + 1000) {
    for (let tries = 0; tries < 50; tries++) {
      const port = LOWEST_PICKED + Math.floor(Math.random() * (floor - LOWEST_PICKED));
      if (await listenAndRelease(port).catch(() => undefined)) return port;
    }
  }
  return listenAndRelease(0); // the kernel's choice: an odd port range, or a crowded machine
}

/** Below this are the well-known and registered ports other software expects to find free. */
const LOWEST_PICKED = 10_000;

/** First port of the range Linux hands out to outgoing connections; elsewhere the IANA one. */
function ephemeralFloor(): number {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/);
    return Number(low) || 49_152;
  } catch {
    return 49_152; // macOS and Windows start their ephemeral range here
  }
}

/** Listens on `port` (0: any) on 127.0.0.1 and closes again; resolves the port it got. */
function listenAndRelease(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/** Polls until the server answers its protocol greeting, or rejects after `timeoutMs`. */
export async function waitForServer(
  kind: ServiceKind,
  port: number,
  child: ChildProcess,
  timeoutMs: number,
  log: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`exited with code ${child.exitCode}: ${log()}`);
    if (await probe(kind, '127.0.0.1', port, 500)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`did not answer within ${timeoutMs / 1000} s: ${log()}`);
}

/** Children we started, killed even if the process exits without awaiting stop(). */
const children = new Set<ChildProcess>();
/** Their throwaway folders, for those started with one: killed outright and removed at exit. */
const folders = new Map<ChildProcess, OwnedFolder>();
/** Folders made by {@link ownedTempDir} and not removed yet. */
const ownedFolders = new Set<OwnedFolder>();
process.once('exit', () => {
  // No waiting is possible here: a server with a folder gets SIGKILL, so the folder can go at once.
  for (const child of children) killGroup(child, folders.has(child) ? 'SIGKILL' : 'SIGTERM');
  for (const folder of ownedFolders) folder.remove();
  // The watchdogs of servers without a folder stay: once this process is gone they follow the SIGTERM
  // above with a SIGKILL for a server that ignores it.
});

/** The file in an owned folder that names the process group of the server living in it. */
const GROUP_FILE = '.labs-server-group';

/**
 * The shell a watchdog runs. It polls the owner once a second; once the owner is gone, it sends the
 * server's group SIGTERM, SIGKILL if the group is still there five seconds later, and removes the
 * server's folder. Arguments: the owner's pid, the server's process group (empty: the one the folder's
 * GROUP_FILE names, if any), the folder (may be empty). A watchdog of a folder ends by itself once the
 * folder is gone (its owner removed it).
 */
const WATCHDOG_SCRIPT = [
  'while kill -0 "$1" 2>/dev/null; do',
  '  if [ -n "$3" ] && [ ! -d "$3" ]; then exit 0; fi',
  '  sleep 1',
  'done',
  `group="$2"; if [ -z "$group" ] && [ -n "$3" ] && [ -f "$3/${GROUP_FILE}" ]; then group=$(cat "$3/${GROUP_FILE}"); fi`,
  'if [ -n "$group" ]; then',
  '  kill -TERM -"$group" 2>/dev/null',
  '  for tick in 1 2 3 4 5; do kill -0 -"$group" 2>/dev/null || break; sleep 1; done',
  '  kill -KILL -"$group" 2>/dev/null',
  'fi',
  'if [ -n "$3" ]; then rm -rf "$3"; fi',
].join('\n');

/**
 * A process that cleans up after this one when it dies without doing so itself. The 'exit' handler
 * above covers a normal exit and an uncaught error, but nothing runs in a process killed with SIGKILL
 * (a test runner's timeout, the OOM killer, `kill -9` on a stuck command line), and a server would
 * keep its port, its memory (a JVM's gigabyte) and its folder (a PostgreSQL cluster is 50-80 MB).
 * Node has no parent-death signal, so a small shell, outside this process and the server's group,
 * watches instead. Returns a function that stops the watchdog (and the `sleep` it waits on: its group).
 */
function watchOwner(group: number | undefined, dir: string | undefined): () => void {
  if (TEST_HOOKS.noWatchdog) return () => {};
  const watchdog = spawn(
    'sh',
    ['-c', WATCHDOG_SCRIPT, 'watchdog', String(process.pid), String(group ?? ''), dir ?? ''],
    {
      detached: true, // a Ctrl-C to the terminal's group must not stop the watchdog before the server
      stdio: 'ignore',
    },
  );
  watchdog.on('error', () => {}); // no sh: only the SIGKILL case loses its safety net
  watchdog.unref();
  return () => {
    if (watchdog.pid === undefined || watchdog.exitCode !== null) return;
    try {
      process.kill(-watchdog.pid, 'SIGKILL');
    } catch {} // already gone
  };
}

/**
 * Switches for the services' own tests, which prove that the watchdog is what removes a folder after a
 * SIGKILL: with `LABS_TEST_NO_WATCHDOG=1` none is started, and the folders stay.
 */
const TEST_HOOKS = { noWatchdog: process.env.LABS_TEST_NO_WATCHDOG === '1' };

/** A throwaway folder that goes with this process, however it ends. */
export interface OwnedFolder {
  readonly path: string;
  /** Removes the folder now (and stops its watchdog). */
  remove(): void;
}

/**
 * Makes a throwaway folder (`<tmp>/<prefix>XXXXXX`) and has it removed when this process ends, even by
 * SIGKILL: a watchdog owns it from its first moment, so a server's folder never outlives a process
 * killed while the server was still being prepared (initdb, Kafka's storage format: seconds of a
 * window). A server started in it with {@link startChild}'s `dir` is stopped by the same watchdog.
 */
export function ownedTempDir(prefix: string): OwnedFolder {
  const path = mkdtempSync(join(tmpdir(), prefix));
  const stopWatchdog = watchOwner(undefined, path);
  const folder: OwnedFolder = {
    path,
    remove() {
      ownedFolders.delete(folder);
      rmSync(path, { recursive: true, force: true });
      stopWatchdog();
    },
  };
  ownedFolders.add(folder);
  return folder;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM') {
  if (child.pid === undefined || child.exitCode !== null) return;
  try {
    process.kill(-child.pid, signal); // the whole group: rabbitmq-server forks beam and epmd
  } catch {
    child.kill(signal);
  }
}

/** A server started by {@link startChild}. */
export interface ServerProcess {
  readonly child: ChildProcess;
  /** SIGTERM to its process group, SIGKILL after the grace; resolves once it has exited. */
  stop(): Promise<void>;
  /** Its last lines of output, for error messages. */
  log(): string;
}

/** How long a server may take to shut down cleanly before it is killed. */
const STOP_GRACE_MS = 5000;

/**
 * Spawns `cmd` in its own process group, keeping the last lines of its output for error messages.
 * With `dir`, the server's throwaway folder ({@link ownedTempDir}), stop() removes it, and so do this
 * process's exit and, after a SIGKILL of this process, the folder's watchdog, which stops the server first.
 */
export function startChild(
  cmd: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; uid?: number; gid?: number; cwd?: string; dir?: OwnedFolder },
): ServerProcess {
  const { dir, ...spawnOptions } = options;
  const child = spawn(cmd, args, { ...spawnOptions, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk: Buffer) => (output = (output + chunk.toString()).slice(-800));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('error', (err) => keep(Buffer.from(String(err))));
  children.add(child);
  child.once('exit', () => children.delete(child));
  if (dir && child.pid !== undefined) {
    // The folder's watchdog stops the server too: it reads the group from here.
    folders.set(child, dir);
    writeFileSync(join(dir.path, GROUP_FILE), String(child.pid));
  } else if (child.pid !== undefined) {
    // Once the server has exited, its watchdog has nothing to watch over.
    child.once('exit', watchOwner(child.pid, undefined));
  }
  const removeDir = () => {
    folders.delete(child);
    dir?.remove();
  };
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return removeDir();
    const exited = new Promise((r) => child.once('exit', r));
    killGroup(child, 'SIGTERM');
    const timer = setTimeout(() => killGroup(child, 'SIGKILL'), STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
    removeDir();
  };
  return { child, stop, log: () => output.trim().split('\n').slice(-3).join(' | ') };
}
