/**
 * `pnpm test`: every lab's contract and every shared package's own tests, in parallel through turbo,
 * then one line per lab and a summary.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { ContractResult } from '../contract.ts';
import { listLabs, repoRoot } from '../labs.ts';
import { c, say } from '../ui.ts';

/** Two tasks at a time: each lab's vitest already uses the machine's cores. */
const CONCURRENCY = '2';

export async function test(): Promise<number> {
  const root = repoRoot();
  const turbo = join(createRequire(join(root, 'package.json')).resolve('turbo/package.json'), '..', 'bin', 'turbo');
  // A result left by an earlier run must not stand in for a lab that did not run this time.
  for (const lab of listLabs(root)) rmSync(join(lab.dir, '.lab', 'check.json'), { force: true });
  const code = await new Promise<number>((resolve) => {
    const child = spawn(turbo, ['run', 'check', '--continue', `--concurrency=${CONCURRENCY}`, '--output-logs=full', '--log-order=grouped'], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, TURBO_TELEMETRY_DISABLED: '1', TURBO_NO_UPDATE_NOTIFIER: '1', DO_NOT_TRACK: '1' },
    });
    child.on('close', (c2) => resolve(c2 ?? 1));
    child.on('error', () => resolve(1));
  });

  say('');
  say(c.bold('Lab contracts'));
  let broken = 0;
  for (const lab of listLabs(root)) {
    let result: ContractResult | undefined;
    try {
      result = JSON.parse(readFileSync(join(lab.dir, '.lab', 'check.json'), 'utf8')) as ContractResult;
    } catch {
      result = undefined;
    }
    if (!result) {
      broken++;
      say(`  ${c.red('✗')} ${lab.slug.padEnd(24)} did not run`);
    } else if (!result.ok) {
      broken++;
      say(`  ${c.red('✗')} ${lab.slug.padEnd(24)} ${result.problems.length} problem(s): ${result.problems[0]}`);
    } else {
      const note = result.starterChanged ? c.yellow(' starter changed by you: solution verified, starter not checked') : '';
      say(`  ${c.green('✓')} ${lab.slug.padEnd(24)} ${result.tests} tests, ${result.challenges} challenges fail on the starter and pass on the solution${note}`);
    }
  }
  const labs = listLabs(root).length;
  say('');
  if (code === 0 && broken === 0) {
    say(c.green(`All ${labs} lab contracts hold and the shared packages' tests pass.`));
    return 0;
  }
  say(c.red(`${broken} of ${labs} lab contracts broken${code !== 0 ? '; some checks failed (see above)' : ''}.`));
  return 1;
}
