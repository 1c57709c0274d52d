/**
 * `./lab test`'s slots (slots.ts): at most the limit run at once, the longest waiting task goes next,
 * and a task's slot is free again the moment its connection closes (it ended, or it died).
 */
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { askSlot, openSlots, type Slots } from '../src/slots.ts';

let root: string;
let slots: Slots | undefined;
afterEach(async () => {
  await slots?.close();
  slots = undefined;
  rmSync(root, { recursive: true, force: true });
});

/** Until `slots` has `n` tasks waiting (each ask reaches the server in its own time). */
async function untilWaiting(n: number) {
  while (slots!.waiting() !== n) await new Promise((resolve) => setTimeout(resolve, 10));
}

/** Asks for a slot and says, once granted, in the order they were granted. */
function ask(path: string, name: string, granted: string[]): Promise<Socket> {
  return askSlot(path, name).then((socket) => {
    granted.push(name);
    return socket!;
  });
}

describe('lab test slots', () => {
  it('run at most the limit at once, the longest waiting task first, and free a slot when its task ends', async () => {
    root = mkdtempSync(join(tmpdir(), 'labs-slots-'));
    slots = await openSlots(root, 1);
    const path = slots.env.LABS_SLOTS;
    const granted: string[] = [];
    const first = await ask(path, '@labs/bench', granted);
    // Two wait behind the first; the one measured longest on a fresh clone (task-seconds.json) goes next.
    const short = ask(path, '@labs/rate-limiter', granted);
    const long = ask(path, '@labs/background-jobs', granted);
    const unknown = ask(path, '@labs/not-measured', granted);
    await untilWaiting(3);
    expect(granted).toEqual(['@labs/bench']);
    first.destroy();
    (await long).destroy();
    (await short).destroy();
    const last = await unknown;
    expect(granted).toEqual(['@labs/bench', '@labs/background-jobs', '@labs/rate-limiter', '@labs/not-measured']);
    last.end();
    await once(last, 'close');
    await slots.close();
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
    root = mkdtempSync(join(tmpdir(), 'labs-slots-'));
    slots = await openSlots(root, 1);
    const path = slots.env.LABS_SLOTS;
    const granted: string[] = [];
    const quick = ask(path, '@labs/bench', granted);
    const long = ask(path, '@labs/background-jobs', granted);
    (await long).destroy();
    (await quick).destroy();
    expect(granted).toEqual(['@labs/background-jobs', '@labs/bench']);
  });

  it('a task that gives up while it waits leaves the queue without taking a slot', async () => {
    root = mkdtempSync(join(tmpdir(), 'labs-slots-'));
    slots = await openSlots(root, 1);
    const path = slots.env.LABS_SLOTS;
    const granted: string[] = [];
    const first = await ask(path, '@labs/bench', granted);
    // The longest task asks, then gives up while it waits (Ctrl-C on it).
    const quitter = connect(path);
    quitter.write('@labs/background-jobs\n');
    const patient = ask(path, '@labs/rate-limiter', granted);
    await untilWaiting(2);
    quitter.destroy();
    await untilWaiting(1);
    first.destroy();
    (await patient).destroy();
    expect(granted).toEqual(['@labs/bench', '@labs/rate-limiter']);
  });
});
