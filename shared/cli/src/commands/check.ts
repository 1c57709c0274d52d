/**
 * `lab check` (run by turbo in each lab folder): the compiler, the spec against the starter, the
 * solution and each wrong fix, then the contract. Prints one line, writes .lab/check.json for `lab
 * test` to summarise.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readLabPackage } from '@labs/test-kit';
import { checkContract } from '../contract.ts';
import { runSpec } from '../run-spec.ts';
import { typecheck } from '../typecheck.ts';
import { listWrongFixes, runWrongFix } from '../wrong-fixes.ts';
import { c, say } from '../ui.ts';

export async function check(dir = process.cwd()): Promise<number> {
  const lab = readLabPackage(dir);
  // The compiler runs beside the first spec run: it needs one core for about a second.
  const [typeErrors, starter] = await Promise.all([typecheck(dir), runSpec(lab, 'starter')]);
  const solution = await runSpec(lab, 'solution');
  const wrongFixes = [];
  for (const fix of listWrongFixes(lab)) wrongFixes.push({ fix, run: await runWrongFix(lab, fix) });
  const result = checkContract(lab, starter, solution, typeErrors, wrongFixes);
  writeFileSync(join(dir, '.lab', 'check.json'), `${JSON.stringify(result, null, 2)}\n`);
  if (result.ok) {
    const note = result.starterChanged ? ' (starter changed by the learner: not held to the contract)' : '';
    say(
      `${c.green('✓')} ${lab.slug}: solution ${result.tests}/${result.tests} pass; starter fails all ${result.challenges} challenges; ${result.wrongFixes} wrong fixes caught${note}`,
    );
    for (const n of result.notes ?? []) say(`    ${c.yellow(n)}`);
    return 0;
  }
  say(`${c.red('✗')} ${lab.slug}: the contract is broken`);
  for (const p of result.problems) say(`    ${p}`);
  return 1;
}
