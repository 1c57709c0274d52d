/**
 * `lab bench --check`: the command line sets BENCH_CHECK=1, and a load script whose target missed must
 * then exit non-zero. Runs a load script in miniature (fixtures/targets-script.ts) as its own process.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('./fixtures/targets-script.ts', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'bench-targets-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Runs the script; resolves with its exit code and output. */
function runScript(
  mode: 'all-met' | 'one-missed',
  check: boolean,
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1', ...extraEnv };
  delete env.BENCH_CHECK;
  if (check) env.BENCH_CHECK = '1';
  return new Promise((resolve) => {
    execFile(process.execPath, [SCRIPT, work, mode], { env }, (error, stdout) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout });
    });
  });
}

describe('targets a script can see', () => {
  it('--check: a missed target makes the script exit non-zero, and says how many missed', async () => {
    const { code, stdout } = await runScript('one-missed', true);
    expect(code).toBe(1);
    expect(stdout).toContain('✗ target missed: solution req/s ÷ starter req/s');
    expect(stdout).toContain('--check: 1 of 3 targets missed.');
  });

  it('--check: all targets met, exit 0', async () => {
    const { code, stdout } = await runScript('all-met', true);
    expect(code).toBe(0);
    expect(stdout).toContain('--check: all 3 targets met.');
  });

  it('without --check a miss is reported but the run still succeeds', async () => {
    const { code, stdout } = await runScript('one-missed', false);
    expect(code).toBe(0);
    expect(stdout).not.toContain('--check');
  });

  it("says whose code a starter row ran: 'your code' when the command line says the learner edited src/", async () => {
    const { stdout } = await runScript('all-met', false, { LAB_STARTER_LABEL: 'your code' });
    expect(stdout).toContain('your code (db 1 ms away)');
    expect(stdout).toContain('solution req/s ÷ your code req/s');
    expect(stdout).not.toMatch(/\bstarter\b/);
    const json = JSON.parse(readFileSync(join(work, 'load', 'results', 'fixture.json'), 'utf8'));
    expect(json.tables[0].rows[0].name).toBe('your code (db 1 ms away)');
    expect(json.targets[0].name).toBe('solution req/s ÷ your code req/s');
  });

  it('writes each target with its figure, threshold and met/missed to the JSON, and the HTML beside it', async () => {
    await runScript('one-missed', false);
    const json = JSON.parse(readFileSync(join(work, 'load', 'results', 'fixture.json'), 'utf8'));
    expect(json.targets).toEqual([
      {
        name: 'solution req/s ÷ starter req/s',
        figure: 3100 / 269,
        comparison: 'at least',
        threshold: 20,
        unit: 'x',
        met: false,
      },
      { name: 'solution p99', figure: 30, comparison: 'at most', threshold: 50, unit: 'ms', met: true },
      {
        name: 'solution queries per request at N=100, as many as at N=10',
        figure: 2,
        comparison: 'exactly',
        threshold: 2,
        unit: '',
        met: true,
      },
    ]);
    expect(readFileSync(join(work, 'load', 'results', 'fixture.html'), 'utf8')).toContain('A made-up comparison');
  });
});
