/**
 * `lab test` reads turbo's run summary to tell a lab whose contract held from one whose package task
 * failed all the same (a script that runs a second pass after `lab check`), so that its summary line and
 * its exit code agree.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { failedTasks, summariesIn } from '../src/commands/test.ts';

const dir = mkdtempSync(join(tmpdir(), 'lab-cli-turbo-runs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A task as turbo's `--summarize` writes it (the fields read, and a few beside them). */
const task = (pkg: string, exitCode: number | null, command = 'lab check') => ({
  taskId: `${pkg}#check`,
  task: 'check',
  package: pkg,
  command,
  cache: { status: 'MISS' },
  execution: { startTime: 1, endTime: 2, exitCode },
});

describe('failedTasks', () => {
  it("names the tasks of this run that failed, with their command, and ignores earlier runs' summaries", () => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'earlier.json'), JSON.stringify({ tasks: [task('@labs/caching', 1)] }));
    const before = summariesIn(dir);
    const embeddedPass = 'lab check && LAB_TARGET=solution LABS_PROVIDER=postgres:embedded vitest run';
    writeFileSync(
      join(dir, 'this-run.json'),
      JSON.stringify({
        tasks: [task('@labs/n-plus-one', 1, embeddedPass), task('@labs/rate-limiter', 0), task('@labs/cli', 0)],
      }),
    );
    const failed = failedTasks(dir, before);
    expect([...failed.keys()]).toEqual(['@labs/n-plus-one']);
    expect(failed.get('@labs/n-plus-one')).toBe(`check (${embeddedPass}) exited 1`);
  });

  it('finds nothing when turbo wrote no summary', () => {
    expect(failedTasks(join(dir, 'missing'), new Set()).size).toBe(0);
  });
});
