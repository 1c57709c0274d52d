/**
 * startChild and serveParent: a real child process, started, asked, stopped and killed.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { startChild } from '../src/child.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/child.ts', import.meta.url));

describe('startChild', () => {
  it('hands the child its input and environment, and answers requests with their replies or errors', async () => {
    await using child = await startChild(FIXTURE, {
      name: 'the echo child',
      input: { greeting: 'hello' },
      env: { CHILD_TEST_VARIABLE: 'set' },
    });
    expect(await child.ask('echo', [1, 2])).toEqual({ greeting: 'hello', value: [1, 2], env: 'set' });
    await expect(child.ask('fail')).rejects.toThrow('the echo child: asked to fail');
    await expect(child.ask('nothing-here')).rejects.toThrow('no handler for "nothing-here"');
  });

  it('stops cleanly when asked: its stop handler runs while it still answers, then it exits 0', async () => {
    const child = await startChild(FIXTURE);
    let exitedBefore = false;
    void child.exited.then(() => {
      exitedBefore = true;
    });
    const stopped = child.stop();
    await child.ask('echo'); // the child still answers while its stop handler waits
    expect(exitedBefore).toBe(false);
    await child.ask('release');
    expect(await stopped).toBe(0);
    await expect(child.ask('echo')).rejects.toThrow('has exited');
  });

  it('kills with a signal, SIGKILL by default', async () => {
    const first = await startChild(FIXTURE);
    expect(await first.kill()).toBe('SIGKILL');
    const second = await startChild(FIXTURE);
    expect(await second.kill('SIGTERM')).toBe('SIGTERM');
  });

  it('rejects with the end of its stderr when the child exits before it is ready', async () => {
    await expect(
      startChild(FIXTURE, { name: 'the worker', input: { greeting: 'x', failAtStart: true } }),
    ).rejects.toThrow(/the worker exited \(3\) before it was ready:\nno database for this worker/);
  });

  it('kills a child that is not ready in time', async () => {
    // No child starts Node and loads a file within a millisecond.
    await expect(startChild(FIXTURE, { name: 'the slow worker', readyTimeoutMs: 1 })).rejects.toThrow(
      'the slow worker was not ready within 1 ms',
    );
  });
});

describe('startChild under Stryker (lab mutate)', () => {
  it("runs the child with the parent's active mutant and counts what it reached under the running test", async () => {
    const ns = { activeMutant: '7', currentTestId: 'the test', mutantCoverage: { static: {}, perTest: {} } };
    (globalThis as { __stryker__?: unknown }).__stryker__ = ns;
    try {
      await using child = await startChild(FIXTURE);
      expect(await child.ask('cover', ['12', '13'])).toBe('7');
      expect(ns.mutantCoverage.perTest).toEqual({ 'the test': { '12': 1, '13': 1 } });
      // Each reach is counted once: what was sent is not sent again.
      await child.ask('cover', ['12']);
      expect(ns.mutantCoverage.perTest).toEqual({ 'the test': { '12': 2, '13': 1 } });
    } finally {
      delete (globalThis as { __stryker__?: unknown }).__stryker__;
    }
  });

  it('leaves the child without a mutant when none is active', async () => {
    await using child = await startChild(FIXTURE);
    expect(await child.ask('cover', ['12'])).toBeUndefined();
  });
});
