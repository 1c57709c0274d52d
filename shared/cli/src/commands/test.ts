/**
 * `pnpm test [lab…]`: the formatter and linter, then every lab's contract (or just the labs named) and
 * every shared package's own tests and types, in parallel through turbo, then one line per lab and a
 * summary.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import type { LabPackage } from '@labs/test-kit';
import { type ContractResult, starterChanged } from '../contract.ts';
import { didYouMean, listLabs, repoRoot } from '../labs.ts';
import { c, LAB, say, UserError } from '../ui.ts';

/** Two tasks at a time: each lab's vitest already uses the machine's cores. */
const CONCURRENCY = '2';

/** Runs `command` with the terminal's output; resolves with its exit code. */
function run(command: string, args: string[], cwd: string): Promise<number> {
  return new Promise<number>((resolve) => {
    const child = spawn(command, args, {
      cwd,
      stdio: 'inherit',
      env: { ...process.env, TURBO_TELEMETRY_DISABLED: '1', TURBO_NO_UPDATE_NOTIFIER: '1', DO_NOT_TRACK: '1' },
    });
    child.on('close', (code) => resolve(code ?? 1));
    child.on('error', () => resolve(1));
  });
}

/** A package's binary, resolved from the repository root (one version for the whole repo). */
const binOf = (root: string, pkg: string, path: string) =>
  join(createRequire(join(root, 'package.json')).resolve(`${pkg}/package.json`), '..', path);

/**
 * What the formatter and linter judge in a lab: everything we wrote, and the learner's starter only
 * while it is ours (unchanged): a learner's edit is theirs to style.
 */
function lintTargets(root: string, lab: LabPackage): string[] {
  const skipped = new Set(starterChanged(lab) ? lab.lab.exercise : []);
  return readdirSync(lab.dir, { recursive: true, encoding: 'utf8' })
    .filter((file) => /\.(ts|js|json)$/.test(file) && !/(^|\/)(node_modules|\.lab|\.turbo|results)\//.test(file))
    .filter((file) => !skipped.has(file))
    .map((file) => relative(root, join(lab.dir, file)));
}

export async function test(names: string[] = []): Promise<number> {
  const root = repoRoot();
  const all = listLabs(root);
  for (const name of names) {
    if (all.some((l) => l.slug === name)) continue;
    const guess = didYouMean(
      name,
      all.map((l) => l.slug),
    );
    throw new UserError(
      `There is no lab called "${name}".${guess ? ` Did you mean ${c.bold(guess)}?` : ''} Run ${c.cyan(`${LAB} list`)} to see them all.`,
    );
  }
  const labs = names.length > 0 ? all.filter((l) => names.includes(l.slug)) : all;
  // A result left by an earlier run must not stand in for a lab that did not run this time.
  for (const lab of labs) rmSync(join(lab.dir, '.lab', 'check.json'), { force: true });

  say(c.bold('Format and lint (Biome)'));
  const paths = [
    ...(names.length > 0 ? [] : ['shared', 'biome.json', 'package.json', 'turbo.json']),
    ...labs.flatMap((l) => lintTargets(root, l)),
  ];
  const lint = await run(
    process.execPath,
    [binOf(root, '@biomejs/biome', 'bin/biome'), 'ci', '--reporter=summary', ...paths],
    root,
  );
  if (lint !== 0)
    say(
      c.red(`Format or lint problems above: ${c.cyan('pnpm format')} fixes the formatting; the rest names its rule.`),
    );

  const filters = names.length > 0 ? labs.map((l) => `--filter=${l.name}`) : [];
  const turbo = binOf(root, 'turbo', 'bin/turbo');
  const code = await run(
    turbo,
    [
      'run',
      'check',
      ...filters,
      '--continue',
      `--concurrency=${CONCURRENCY}`,
      '--output-logs=full',
      '--log-order=grouped',
    ],
    root,
  );

  say('');
  say(c.bold('Lab contracts'));
  let broken = 0;
  for (const lab of labs) {
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
      const note = result.starterChanged
        ? c.yellow(' starter changed by you: solution verified, starter not checked')
        : '';
      say(
        `  ${c.green('✓')} ${lab.slug.padEnd(24)} ${result.tests} tests, ${result.challenges} challenges fail on the starter and pass on the solution, ${result.wrongFixes} wrong fixes caught${note}`,
      );
      for (const n of result.notes ?? []) say(`    ${c.yellow(n)}`);
    }
  }
  say('');
  if (code === 0 && broken === 0 && lint === 0) {
    say(
      c.green(
        `All ${labs.length} lab contracts hold${names.length > 0 ? '' : " and the shared packages' tests pass"}.`,
      ),
    );
    return 0;
  }
  const failed = [code !== 0 && 'some checks failed (see above)', lint !== 0 && 'format or lint problems'].filter(
    Boolean,
  );
  say(c.red(`${broken} of ${labs.length} lab contracts broken${failed.length > 0 ? `; ${failed.join('; ')}` : ''}.`));
  return 1;
}
