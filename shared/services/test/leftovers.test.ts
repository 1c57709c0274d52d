/**
 * Nothing left on disk, nor running, when the process that started servers is killed outright: the
 * binary step's Redis, PostgreSQL, RabbitMQ and Kafka, started by an owner process (the command line,
 * `lab serve`, a spec run) that then gets SIGKILL, so none of its own clean-up runs. The owner runs with
 * a temporary folder of its own (TMPDIR), so "no labs-* folder left" is about its folders only, never
 * about those of another run on the same machine.
 *
 * The test can fail: the same owner with its watchdogs switched off (LABS_TEST_NO_WATCHDOG=1) leaves
 * its PostgreSQL running and its cluster on disk, and the second test asserts exactly that.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type ServiceKind, probe } from '../src/index.ts';
import { hostAndPort } from '../src/probe.ts';

const OWNER = join(import.meta.dirname, 'fixtures', 'owner.ts');
const roots: string[] = [];
afterAll(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

interface Found {
  kind: ServiceKind;
  url?: string;
  provider?: string;
  missing?: string;
}

/** A private temporary folder the PostgreSQL server (run as the postgres user under root) can enter. */
function privateTmp(): string {
  const root = mkdtempSync(join(tmpdir(), 'owner-tmp-'));
  chmodSync(root, 0o755);
  roots.push(root);
  return root;
}

/** Starts an owner of `kinds` (binary step only) and resolves with what it started, once it has. */
async function startOwner(
  kinds: ServiceKind[],
  env: NodeJS.ProcessEnv,
): Promise<{ child: ChildProcess; found: Found[] }> {
  const child = spawn(process.execPath, [OWNER, ...kinds], {
    env: { ...process.env, ...env, LABS_PROVIDER: 'binary' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const found = await new Promise<Found[]>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split('\n').find((l) => l.startsWith('['));
      if (line) resolve(JSON.parse(line) as Found[]);
    });
    child.once('exit', (code) => reject(new Error(`the owner exited (${code}) before its servers answered`)));
  });
  return { child, found };
}

/** Kills `child` with SIGKILL and waits until it is gone. */
async function killOutright(child: ChildProcess): Promise<void> {
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

/** The labs-* folders left in `root`. */
const leftIn = (root: string) => readdirSync(root).filter((name) => name.startsWith('labs-'));

/** Polls `condition` every 250 ms until it holds or `ms` pass; returns whether it held. */
async function until(condition: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Whether the server at `url` still answers. */
const answers = (kind: ServiceKind, url: string) => {
  const { host, port } = hostAndPort(kind, url);
  return probe(kind, host, port, 500);
};

describe('an owner killed with SIGKILL', () => {
  it('leaves no server running and no labs-* folder, for every kind the binary step can start here', async () => {
    const root = privateTmp();
    const { child, found } = await startOwner(['redis', 'postgres', 'rabbitmq', 'kafka'], { TMPDIR: root });
    const started = found.filter((f): f is Found & { url: string } => f.url !== undefined);
    for (const f of found) if (f.missing) console.warn(`not checked here: ${f.kind}: ${f.missing}`);
    // The three that only need a package installed must be there; a machine without Java lacks only Kafka.
    expect(started.map((f) => f.kind)).toEqual(expect.arrayContaining(['redis', 'postgres', 'rabbitmq']));
    expect(leftIn(root).length, 'the folders of the servers that keep one').toBeGreaterThanOrEqual(2);

    await killOutright(child);
    // The watchdogs poll once a second and give a server 5 s after SIGTERM: 30 s is generous.
    expect(await until(() => leftIn(root).length === 0, 30_000), `left in ${root}: ${leftIn(root)}`).toBe(true);
    for (const f of started)
      expect(await until(async () => !(await answers(f.kind, f.url)), 30_000), `${f.kind} still answers`).toBe(true);
  }, 240_000);

  it('can fail: without the watchdogs, its PostgreSQL keeps running and its cluster stays on disk', async () => {
    const root = privateTmp();
    const { child, found } = await startOwner(['postgres'], { TMPDIR: root, LABS_TEST_NO_WATCHDOG: '1' });
    const postgres = found[0]!;
    expect(postgres.url, postgres.missing).toBeDefined();
    await killOutright(child);
    try {
      // Given the watchdogs' time, and more.
      await new Promise((r) => setTimeout(r, 8000));
      expect(leftIn(root)).toHaveLength(1);
      expect(await answers('postgres', postgres.url!)).toBe(true);
    } finally {
      // Clean up by hand what the watchdog would have: the server's group (named in its folder), then the folder.
      for (const name of leftIn(root)) {
        const groupFile = join(root, name, '.labs-server-group');
        if (existsSync(groupFile)) {
          try {
            process.kill(-Number(readFileSync(groupFile, 'utf8')), 'SIGKILL');
          } catch {} // already gone
        }
      }
      expect(await until(async () => !(await answers('postgres', postgres.url!)), 10_000), 'stopped by hand').toBe(
        true,
      );
    }
  }, 120_000);
});
