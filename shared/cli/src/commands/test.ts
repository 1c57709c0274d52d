/**
 * `pnpm test [lab…]`: the formatter and linter, then every lab's contract (or just the labs named) and
 * every shared package's own tests and types, in parallel through turbo, then one line per lab and a
 * summary. Turbo keeps each task's result keyed by its files, the shared packages it uses and the
 * services it runs against (their versions): a second run with nothing changed answers from that cache,
 * and an edited lab re-runs alone. `LABS_NO_CACHE=1` runs everything again.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import { serviceFingerprint } from '@labs/services';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { type ContractResult, starterChanged } from '../contract.ts';
import { didYouMean, listLabs, repoRoot } from '../labs.ts';
import { openSlots } from '../slots.ts';
import { c, colourEnv, LAB, say, UserError } from '../ui.ts';

/**
 * Checks at a time: the slots `./lab test` hands out, the longest check first (slots.ts). Each lab's
 * check runs one spec run at a time by default (LABS_SPEC_CONCURRENCY in check.ts), and a spec run
 * spends most of its time waiting on servers and bounded stalls, so four checks keep two cores about
 * three-quarters busy. Measured on a fresh clone (two cores, idle): a whole first run took 340 s at three
 * and 289 s at four (413 s of CPU), every contract holding. Six spec runs at once (two per check, three
 * checks) once made one of three whole runs fail a bound of one service answer.
 */
const CONCURRENCY = Math.max(1, Number(process.env.LABS_CONCURRENCY) || 4);
/** Turbo starts every task at once (there are fewer than this) and the slots say which one runs. */
const TURBO_TASKS = 64;

/** Runs `command` with the terminal's output; resolves with its exit code. */
function run(command: string, args: string[], cwd: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<number> {
  return new Promise<number>((resolve) => {
    const child = spawn(command, args, {
      cwd,
      stdio: 'inherit',
      env: {
        ...process.env,
        ...colourEnv(),
        ...extraEnv,
        TURBO_TELEMETRY_DISABLED: '1',
        TURBO_NO_UPDATE_NOTIFIER: '1',
        DO_NOT_TRACK: '1',
      },
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
 * while it is ours (unchanged): a learner's edit is theirs to style. Git lists the files (tracked, or new
 * and not ignored), which spares walking node_modules; outside a git checkout, the folder is walked.
 */
function lintTargets(root: string, lab: LabPackage): string[] {
  const skipped = new Set(starterChanged(lab) ? lab.lab.exercise : []);
  const git = spawnSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z', '.'], {
    cwd: lab.dir,
    encoding: 'utf8',
  });
  const files =
    git.status === 0
      ? git.stdout.split('\0').filter(Boolean)
      : readdirSync(lab.dir, { recursive: true, encoding: 'utf8' }).filter(
          (file) => !/(^|\/)(node_modules|\.lab|\.turbo|results)\//.test(file),
        );
  return files
    .filter((file) => /\.(ts|js|json)$/.test(file) && !skipped.has(file))
    .map((file) => relative(root, join(lab.dir, file)));
}

/** Turbo's run summaries (`--summarize`), by file name. */
export const summariesIn = (dir: string) => new Set(existsSync(dir) ? readdirSync(dir) : []);

/**
 * The tasks that failed in the turbo run that wrote a summary not in `before` (exit code not 0), by
 * package name with the command it ran. A lab's package task may do more than `lab check` (a script
 * that runs a second pass after it), so the lab's `.lab/check.json` alone cannot say its task held.
 */
export function failedTasks(dir: string, before: Set<string>): Map<string, string> {
  const failed = new Map<string, string>();
  for (const name of summariesIn(dir)) {
    if (before.has(name) || !name.endsWith('.json')) continue;
    try {
      const summary = JSON.parse(readFileSync(join(dir, name), 'utf8')) as TurboSummary;
      for (const task of summary.tasks ?? [])
        if (task.execution && task.execution.exitCode !== 0)
          failed.set(task.package, `${task.task} (${task.command}) exited ${task.execution.exitCode}`);
    } catch {
      // A summary being written or unreadable says nothing about the tasks.
    }
  }
  return failed;
}

/** The part of turbo's run summary read here. */
interface TurboSummary {
  tasks?: { package: string; task: string; command: string; execution?: { exitCode: number | null } }[];
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
    [
      binOf(root, '@biomejs/biome', 'bin/biome'),
      'ci',
      '--reporter=summary',
      `--colors=${colourEnv().NO_COLOR ? 'off' : 'force'}`,
      ...paths,
    ],
    root,
  );
  if (lint !== 0)
    say(
      c.red(`Format or lint problems above: ${c.cyan('pnpm format')} fixes the formatting; the rest names its rule.`),
    );

  const filters = names.length > 0 ? labs.map((l) => `--filter=${l.name}`) : [];
  const summaries = join(root, '.turbo', 'runs');
  const summariesBefore = summariesIn(summaries);
  const turbo = binOf(root, 'turbo', 'bin/turbo');
  const slots = await openSlots(root, CONCURRENCY);
  const code = await run(
    turbo,
    [
      'run',
      'check',
      ...filters,
      '--continue',
      `--concurrency=${TURBO_TASKS}`,
      // A replayed result shows only its last lines; a task that runs shows everything.
      '--output-logs=new-only',
      '--log-order=grouped',
      // .turbo/runs/<id>.json: each task's start, end and cache status, for the time plan in CONTRIBUTING.md.
      '--summarize',
      ...(process.env.LABS_NO_CACHE === '1' ? ['--force'] : []),
      ...(colourEnv().NO_COLOR ? ['--no-color'] : []),
    ],
    root,
    // Part of each task's cache key (turbo.json): the servers the specs will meet, and their versions.
    // pnpm, which turbo runs each task's script through, stays silent: a failed check has said why
    // itself, so pnpm's own "[ELIFECYCLE] Command failed" line would only be noise under it.
    { LABS_SERVICES: await serviceFingerprint(), pnpm_config_reporter: 'silent', ...slots.env },
  ).finally(() => slots.close());

  const failed = failedTasks(summaries, summariesBefore);
  say('');
  say(c.bold('Lab contracts'));
  let broken = 0;
  const unverified: string[] = [];
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
    } else if (result.unverified) {
      unverified.push(lab.slug);
      say(`  ${c.yellow('-')} ${lab.slug.padEnd(24)} not verified: ${result.unverified}`);
    } else if (!result.ok) {
      broken++;
      say(`  ${c.red('✗')} ${lab.slug.padEnd(24)} ${result.problems.length} problem(s): ${result.problems[0]}`);
    } else if (failed.has(lab.name)) {
      // The contract held, but the lab's package task did more and that failed: not a pass.
      broken++;
      say(
        `  ${c.red('✗')} ${lab.slug.padEnd(24)} the contract holds, but its package's ${failed.get(lab.name)} (its output is above)`,
      );
    } else {
      const note = result.starterChanged
        ? c.yellow(' starter changed by you: solution verified, starter not checked')
        : '';
      const took = result.seconds
        ? c.dim(
            ` (${Object.values(result.seconds)
              .reduce((a, b) => a + b, 0)
              .toFixed(0)} s)`,
          )
        : '';
      say(
        `  ${c.green('✓')} ${lab.slug.padEnd(24)} ${result.tests} tests, ${result.challenges} challenges fail on the starter and pass on the solution, ${result.wrongFixes} wrong fixes caught${note}${took}`,
      );
      for (const n of result.notes ?? []) say(`    ${c.yellow(n)}`);
    }
  }
  say('');
  // One plain closing line that any CI reads the same way.
  say(`labs: ${labs.length - broken - unverified.length} passed, ${broken + unverified.length} failed`);
  if (code === 0 && broken === 0 && unverified.length === 0 && lint === 0) {
    say(
      c.green(
        `All ${labs.length} lab contracts hold${names.length > 0 ? '' : " and the shared packages' tests pass"}.`,
      ),
    );
    return 0;
  }
  // A lab that could not run for want of a service is not a broken contract, but it is not verified
  // either: the run fails, and says which it is.
  const labNames = new Set(labs.map((l) => l.name));
  const others = [...failed.keys()].filter((name) => !labNames.has(name));
  const why = [
    broken > 0 && `${broken} of ${labs.length} labs failed`,
    unverified.length > 0 && `${unverified.length} not verified for want of a service (${unverified.join(', ')})`,
    others.length > 0 && `failed: ${others.map((name) => `${name} ${failed.get(name)}`).join(', ')}`,
    code !== 0 && broken === 0 && unverified.length === 0 && others.length === 0 && 'some checks failed (see above)',
    lint !== 0 && 'format or lint problems',
  ].filter(Boolean);
  say(c.red(`${why.join('; ')}.`));
  return 1;
}
