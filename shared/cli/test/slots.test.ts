/**
 * `./lab test`'s slots (slots.ts): at most the limit run at once, the longest waiting task goes next,
 * and a task's slot is free again the moment its connection closes (it ended, or it died).
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { askSlot, openSlots, type Slots } from '../src/slots.ts';

/** Each test's slots: one at a time, in a folder of its own; `path` is where tasks ask, `granted` who got one. */
let root: string;
let slots: Slots | undefined;
let path: string;
let granted: string[];
beforeEach(async () => {
  root = mkdtempSync(join(tmpdir(), 'labs-slots-'));
  slots = await openSlots(root, 1);
  path = slots.env.LABS_SLOTS;
  granted = [];
});
afterEach(async () => {
  await slots?.close();
  slots = undefined;
  rmSync(root, { recursive: true, force: true });
});

/** Until `slots` has `n` tasks waiting (each ask reaches the server in its own time). */
async function untilWaiting(n: number) {
  while (slots!.waiting() !== n) await new Promise((resolve) => setTimeout(resolve, 10));
}

/** Asks for a slot and says, once granted, in `granted`, in the order they were granted. */
function ask(name: string): Promise<Socket> {
  return askSlot(path, name).then((socket) => {
    granted.push(name);
    return socket!;
  });
}

describe('lab test slots', () => {
  it('run at most the limit at once, the longest waiting task first, and free a slot when its task ends', async () => {
    const first = await ask('@labs/bench');
    // Two wait behind the first; the one measured longest on a fresh clone (task-seconds.json) goes next.
    const short = ask('@labs/rate-limiter');
    const long = ask('@labs/background-jobs');
    const unknown = ask('@labs/not-measured');
    await untilWaiting(3);
    expect(granted).toEqual(['@labs/bench']);
    first.destroy();
    (await long).destroy();
    (await short).destroy();
    const last = await unknown;
    expect(granted).toEqual(['@labs/bench', '@labs/background-jobs', '@labs/rate-limiter', '@labs/not-measured']);
    last.end();
    await once(last, 'close');
    await slots!.close();
    slots = undefined;
    // What each took is kept for the next run's order.
    const kept = JSON.parse(readFileSync(join(root, 'node_modules', '.cache', 'labs', 'task-seconds.json'), 'utf8'));
    expect(Object.keys(kept).sort()).toEqual([
      '@labs/background-jobs',
      '@labs/bench',
      '@labs/not-measured',
      '@labs/rate-limiter',
    ]);
  });

  it('the tasks that ask together go longest first, though a slot is free when the first one asks', async () => {
    const quick = ask('@labs/bench');
    const long = ask('@labs/background-jobs');
    (await long).destroy();
    (await quick).destroy();
    expect(granted).toEqual(['@labs/background-jobs', '@labs/bench']);
  });

  it('a task that gives up while it waits leaves the queue without taking a slot', async () => {
    const first = await ask('@labs/bench');
    // The longest task asks, then gives up while it waits (Ctrl-C on it).
    const quitter = connect(path);
    quitter.write('@labs/background-jobs\n');
    const patient = ask('@labs/rate-limiter');
    await untilWaiting(2);
    quitter.destroy();
    await untilWaiting(1);
    first.destroy();
    (await patient).destroy();
    expect(granted).toEqual(['@labs/bench', '@labs/rate-limiter']);
  });
});
