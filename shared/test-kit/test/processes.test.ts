/**
 * *No process dies* can fail: real Node children crash, reject, log and exit in each way a lab's worker
 * does, and the watcher must report each unlawful end and let each lawful one pass.
 */
import { type ChildProcess, execFile, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { expectExit, expectNoProcessDied, InvariantError, takeProcessIncidents, watchProcesses } from '../src/index.ts';

const CHILD = new URL('./fixtures/crashing-child.ts', import.meta.url);
const SELF = new URL('./fixtures/watched-self.ts', import.meta.url);

watchProcesses();
const started: ChildProcess[] = [];
/** Each child's 'close', listened for from its start (a quick child may close before the test waits). */
const closes = new WeakMap<ChildProcess, Promise<unknown>>();
afterEach(() => {
  for (const child of started.splice(0)) child.kill('SIGKILL');
  takeProcessIncidents(); // each test judges its own
});

/** Forks the fixture child in `mode` with its stderr piped, as a lab's worker-starting code does. */
async function child(mode: string): Promise<ChildProcess> {
  const c = fork(CHILD, [mode], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  started.push(c);
  closes.set(c, once(c, 'close'));
  await once(c.stdout!, 'data');
  return c;
}

/** Waits until `c` has ended and its streams closed (when the watcher judges it). */
async function settled(c: ChildProcess): Promise<void> {
  await closes.get(c);
  await new Promise((resolve) => setImmediate(resolve));
}

describe('no process dies: children', () => {
  it('reports a child that throws an uncaught exception, with its exit code and stderr', async () => {
    const c = await child('throw');
    await settled(c);
    const incidents = takeProcessIncidents();
    expect(incidents.map((i) => i.what)).toEqual([
      'printed an unhandled rejection or uncaught exception',
      'exited with code 1',
    ]);
    expect(incidents[1]!.detail).toMatch(/SyntaxError/);
    expect(incidents[0]!.process).toMatch(/^pid \d+ \(node crashing-child\.ts throw\)$/);
  });

  it('reports an unhandled rejection that kills a child', async () => {
    const c = await child('reject');
    await settled(c);
    expect(() => expectNoProcessDied()).toThrow(InvariantError);
  });

  it('reports a child that logs an unhandled rejection and lives on', async () => {
    const c = await child('logs-and-lives');
    // It does not exit: wait for its line on stderr instead.
    await once(c.stderr!, 'data');
    await new Promise((resolve) => setImmediate(resolve));
    expect(() => expectNoProcessDied()).toThrow(/No process dies: 1 incident.*\n.*printed an unhandled rejection/);
    expect(c.exitCode).toBeNull();
  });

  it('reports a non-zero exit and a kill the test process did not send', async () => {
    const c = await child('exit-1');
    await settled(c);
    expect(takeProcessIncidents().map((i) => i.what)).toEqual(['exited with code 1']);
    const other = await child('idle');
    process.kill(other.pid!, 'SIGKILL'); // not through other.kill(): as the OOM killer would
    await settled(other);
    expect(takeProcessIncidents().map((i) => i.what)).toEqual([
      'was killed by SIGKILL, which the test process did not send',
    ]);
  });

  it('lets lawful ends pass: exit 0, child.kill(), an exit declared with expectExit, a non-Node child', async () => {
    const clean = await child('exit-0');
    await settled(clean);
    const killed = await child('idle');
    killed.kill('SIGTERM');
    await settled(killed);
    const crashed = await child('idle');
    expectExit(crashed.pid!);
    process.kill(crashed.pid!, 'SIGKILL');
    await settled(crashed);
    const shell = spawn('sh', ['-c', 'echo uncaught exception >&2; exit 3'], { stdio: ['ignore', 'ignore', 'pipe'] });
    await once(shell, 'exit');
    expect(() => expectNoProcessDied()).not.toThrow();
  });
});

describe('no process dies: the test process itself', () => {
  // In a process of its own: a real unhandled rejection here would also fail this vitest run.
  it.each([
    ['reject', 'left a promise rejection unhandled', /a rejection nobody awaited/],
    ['throw', 'threw an uncaught exception', /thrown from a timer/],
  ])('records %s', async (mode, what, detail) => {
    const { stdout } = await promisify(execFile)(process.execPath, [new URL(SELF).pathname, mode]);
    const incidents = JSON.parse(stdout) as { process: string; what: string; detail: string }[];
    expect(incidents).toHaveLength(1);
    expect(incidents[0]).toMatchObject({ process: 'this test process', what });
    expect(incidents[0]!.detail).toMatch(detail);
  });

  it('records nothing for a process that behaves', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [new URL(SELF).pathname, 'behave']);
    expect(JSON.parse(stdout)).toEqual([]);
  });
});
