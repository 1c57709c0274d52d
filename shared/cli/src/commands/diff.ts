/**
 * `lab diff <slug> [--force]`: the learner's exercise file(s) next to the reference solution, as a unified
 * diff (git diff --no-index). Offered once the lab is solved; --force shows it before.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { solutionFile } from '../labs.ts';
import { readProgress, statusOf } from '../progress.ts';
import { c, LAB, say, UserError } from '../ui.ts';

export function diff(root: string, lab: LabPackage, options: { force: boolean }): number {
  const status = statusOf(readProgress(root), lab.slug);
  if (status !== 'solved' && !options.force) {
    say(
      `${lab.slug} is ${status === 'not started' ? 'not started yet' : 'not solved yet'}: the diff gives the solution away.`,
    );
    say(
      `Solve it first (${c.cyan(`${LAB} ${lab.slug}`)}), or see it anyway: ${c.cyan(`${LAB} diff ${lab.slug} --force`)}`,
    );
    return 1;
  }
  let differences = 0;
  for (const file of lab.lab.exercise) {
    const solution = solutionFile(file);
    if (!existsSync(join(lab.dir, solution)))
      throw new UserError(`${lab.slug} has no ${solution} to compare ${file} with.`, 1);
    // a/ is yours, b/ the solution: the diff reads as "what the reference does differently".
    const result = spawnSync(
      'git',
      ['diff', '--no-index', `--color=${process.stdout.isTTY ? 'always' : 'never'}`, '--', file, solution],
      {
        cwd: lab.dir,
        encoding: 'utf8',
      },
    );
    if (result.status !== 0 && result.status !== 1)
      throw new UserError(`git diff failed: ${(result.stderr || '').trim()}`, 1);
    if (result.status === 1) differences++;
    process.stdout.write(result.stdout);
  }
  if (differences === 0) say(c.green('Your code is the reference solution, line for line.'));
  else
    say(
      c.dim(
        `\n--- your ${lab.lab.exercise.join(', ')}   +++ the reference solution. Its comments name the trade-offs.`,
      ),
    );
  return 0;
}
