/** The contract on two spec runs, without running them: what passes, what breaks it, what a skip may do. */
import { describe, expect, it } from 'vitest';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { inPool } from '../src/commands/check.ts';
import { checkContract } from '../src/contract.ts';
import type { SpecRun, TestOutcome } from '../src/run-spec.ts';

const lab = { slug: 'demo', dir: '/nowhere', lab: { exercise: ['src/demo.ts'] } } as unknown as LabPackage;
const test = (title: string, status: TestOutcome['status']): TestOutcome => ({ title, fullName: title, status });
const run = (target: SpecRun['target'], tests: TestOutcome[]): SpecRun => ({ target, tests });

describe('checkContract', () => {
  it('holds when the solution passes all and the starter fails every challenge only', () => {
    const result = checkContract(
      lab,
      run('starter', [test('works', 'passed'), test('challenge: holds up', 'failed')]),
      run('solution', [test('works', 'passed'), test('challenge: holds up', 'passed')]),
      [],
      [],
      false,
    );
    expect(result).toMatchObject({ ok: true, tests: 2, challenges: 1, problems: [] });
  });

  it('a baseline that skips itself where it cannot apply is noted, not a breach', () => {
    const result = checkContract(
      lab,
      run('starter', [test('not here', 'skipped'), test('challenge: holds up', 'failed')]),
      run('solution', [test('not here', 'skipped'), test('challenge: holds up', 'passed')]),
      [],
      [],
      false,
    );
    expect(result.ok).toBe(true);
    expect(result.notes?.join(' ')).toContain('"not here"');
  });

  it('a challenge may not skip: it must be able to fail', () => {
    const result = checkContract(
      lab,
      run('starter', [test('challenge: holds up', 'skipped')]),
      run('solution', [test('challenge: holds up', 'skipped')]),
      [],
      [],
      false,
    );
    expect(result.ok).toBe(false);
    expect(result.problems.join('\n')).toMatch(/solution: "challenge: holds up" skipped/);
  });
});

describe('inPool (how lab check runs a lab spec runs)', () => {
  it('runs at most `limit` at once, starts them in the order given, and keeps their results in that order', async () => {
    let running = 0;
    let most = 0;
    const started: number[] = [];
    const gates = Array.from({ length: 7 }, () => Promise.withResolvers<void>());
    const jobs = gates.map((gate, i) => async () => {
      started.push(i);
      running++;
      most = Math.max(most, running);
      await gate.promise;
      running--;
      return `run ${i}`;
    });
    const all = inPool(jobs, 3);
    await new Promise((r) => setTimeout(r, 10));
    expect(started).toEqual([0, 1, 2]);
    // Opened last to first: a job started later finds its gate open and frees its place at once.
    for (const gate of [...gates].reverse()) {
      gate.resolve();
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(await all).toEqual(jobs.map((_, i) => `run ${i}`));
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(most).toBe(3);
  });
});
