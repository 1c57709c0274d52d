/**
 * `lab <slug> [--solution]`: the spec against the learner's code (or the reference), reported for a
 * learner: which baseline tests hold, which challenge fails and the assertion that explains it, the
 * next hint, and on success what comes next (bench, the debrief, the next lab).
 */
import { join, relative } from 'node:path';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { solutionFile } from '../labs.ts';
import { readProgress, statusOf, updateProgress } from '../progress.ts';
import { isChallenge, runSpec, type Target, type TestOutcome } from '../run-spec.ts';
import { labServices, releaseServices } from '../services.ts';
import { onInterrupt } from '../child.ts';
import { c, LAB, say } from '../ui.ts';

/** What one run found. */
export interface RunOutcome {
  /** 0 all pass, 1 something fails or the spec could not run, 130 interrupted. */
  code: number;
  interrupted?: boolean;
}

/** Options for {@link reportRun}. */
export interface RunOptions {
  /** Environment from {@link labServices}. */
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  /** Lines saying where each service was found, printed under the title. */
  services?: string[];
}

const mark = (status: string) =>
  status === 'passed' ? c.green('✓') : status === 'failed' ? c.red('✗') : c.yellow('-');
const challengeName = (t: TestOutcome) => t.title.replace(/^challenge:\s*/, '');

/** The lab after `lab` in curriculum order that the learner has not solved, if any. */
function nextLab(root: string, labs: LabPackage[], lab: LabPackage): LabPackage | undefined {
  const progress = readProgress(root);
  const at = labs.findIndex((l) => l.slug === lab.slug);
  const after = [...labs.slice(at + 1), ...labs.slice(0, Math.max(at, 0))];
  return after.find((l) => statusOf(progress, l.slug) !== 'solved');
}

/** Runs the spec once and prints the learner's report. */
export async function reportRun(
  root: string,
  labs: LabPackage[],
  lab: LabPackage,
  target: Target,
  options: RunOptions = {},
): Promise<RunOutcome> {
  const files = lab.lab.exercise.map((f) => relative(root, join(lab.dir, target === 'solution' ? solutionFile(f) : f)));
  say(
    `${c.bold(lab.lab.title)} — running the spec against ${target === 'solution' ? 'the reference solution' : 'your code'} (${files.join(', ')})`,
  );
  for (const line of options.services ?? []) say(c.dim(line));
  const run = await runSpec(lab, target, { env: options.env, signal: options.signal });
  if (run.interrupted) return { code: 130, interrupted: true };
  if (run.error) {
    say('');
    say(c.red('The spec could not run:'));
    say(
      run.error
        .split('\n')
        .slice(0, 20)
        .map((l) => `  ${l}`)
        .join('\n'),
    );
    say('');
    say(
      `If this is about a service, ${c.cyan(`${LAB} doctor`)} shows where each one is found. If it is a compile error, it is in your edit.`,
    );
    return { code: 1 };
  }
  const baseline = run.tests.filter((t) => !isChallenge(t));
  const challenges = run.tests.filter(isChallenge);
  const failedBaseline = baseline.filter((t) => t.status !== 'passed');
  const failedChallenges = challenges.filter((t) => t.status !== 'passed');
  say('');
  say(
    c.bold(`Baseline: ${baseline.length - failedBaseline.length} of ${baseline.length} pass`) +
      c.dim('  (behaviour every version must keep)'),
  );
  for (const t of baseline)
    say(`  ${mark(t.status)} ${t.title}${t.status === 'failed' ? `\n      ${c.red(t.failure ?? '')}` : ''}`);
  say(
    c.bold(`Challenges: ${challenges.length - failedChallenges.length} of ${challenges.length} pass`) +
      c.dim('  (what the naive version gets wrong)'),
  );
  for (const t of challenges)
    say(`  ${mark(t.status)} ${challengeName(t)}${t.status === 'failed' ? `\n      ${c.red(t.failure ?? '')}` : ''}`);
  const allPass = failedBaseline.length === 0 && failedChallenges.length === 0;
  if (target === 'starter')
    updateProgress(root, lab.slug, { status: allPass ? 'solved' : 'in progress', lastRun: new Date().toISOString() });
  say('');
  if (allPass) {
    say(
      c.green(`All ${run.tests.length} tests pass.`) +
        (target === 'solution' ? ' (reference solution)' : c.green(' Lab solved.')),
    );
    say('Next:');
    say(`  ${c.cyan(`${LAB} bench ${lab.slug}`)}   measure it: starter and solution side by side`);
    say(`  ${c.cyan(`labs/${lab.slug}/README.md`)}   the debrief: how to answer it in an interview, the trade-offs`);
    if (target === 'starter') say(`  ${c.cyan(`${LAB} diff ${lab.slug}`)}    your code next to the reference solution`);
    const next = nextLab(root, labs, lab);
    if (target === 'starter')
      say(
        next
          ? `  ${c.cyan(`${LAB} ${next.slug}`)}   the next lab: ${next.lab.title}`
          : c.green('  That was the last unsolved lab. Well done.'),
      );
    return { code: 0 };
  }
  if (failedBaseline.length > 0)
    say(c.yellow(`${failedBaseline.length} baseline test(s) fail: a fix must keep the behaviour that already worked.`));
  const first = failedChallenges[0] ?? failedBaseline[0];
  if (first)
    say(
      `${c.bold('Start with:')} ${isChallenge(first) ? challengeName(first) : first.title} ${c.dim('(its assertion above says what went wrong)')}`,
    );
  if (target === 'solution') {
    say(c.red('The reference solution should pass everything: this is a bug in the lab, please report it.'));
    return { code: 1 };
  }
  say(`Edit ${c.cyan(files.join(', '))} where it says TODO(lab).`);
  const shown = readProgress(root)[lab.slug]?.hintLevel ?? 0;
  const total = lab.lab.hints.length;
  if (total > 0) {
    say(
      shown < total
        ? `Stuck? ${c.cyan(`${LAB} hint ${lab.slug}`)} shows hint ${shown + 1} of ${total}.`
        : `You have seen all ${total} hints; the README walks through the fix.`,
    );
  }
  return { code: 1 };
}

/** `lab <slug> [--solution]`: services, one run, the report; Ctrl-C stops everything it started. */
export async function runLab(root: string, labs: LabPackage[], lab: LabPackage, target: Target): Promise<number> {
  const controller = new AbortController();
  const release = onInterrupt(() => controller.abort());
  try {
    const services: string[] = [];
    const env = await labServices(lab, { log: (line) => services.push(line), embeddedPerTestFile: true });
    const outcome = await reportRun(root, labs, lab, target, { env, services, signal: controller.signal });
    if (outcome.interrupted) say(c.dim('Stopped.'));
    return outcome.code;
  } finally {
    release();
    await releaseServices();
  }
}
