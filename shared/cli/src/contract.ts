/**
 * The lab contract of LABS.md, checked on two spec runs: the solution passes everything; the starter
 * passes every baseline test and fails every `challenge:` test. A starter the learner has edited is
 * reported as changed instead of being held to the contract.
 */
import { spawnSync } from 'node:child_process';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { isChallenge, type SpecRun, type TestOutcome } from './run-spec.ts';
import { type CompilerError, formatTypeError } from './typecheck.ts';
import { type WrongFix, wrongFixProblems } from './wrong-fixes.ts';

export interface ContractResult {
  slug: string;
  ok: boolean;
  starterChanged: boolean;
  tests: number;
  challenges: number;
  /** Wrong fixes run, each failing every challenge it names (when `ok`). */
  wrongFixes: number;
  problems: string[];
  /** Compiler errors in the learner's edited starter: reported, not held against the contract. */
  notes?: string[];
  /** Where the check's time went, in seconds per step (services, spec runs). */
  seconds?: Record<string, number>;
  /** Seconds from start to end of each spec run: `starter`, `solution`, and each wrong fix by its file. */
  runSeconds?: Record<string, number>;
  /**
   * When the runs went through one vitest process: their seconds summed per step (`environment`: the
   * fork; `prepare`; `imports`: loading the spec and what it imports; `setup`; `tests`).
   */
  runSteps?: Record<string, number>;
  /** How many spec runs ran at once. */
  concurrency?: number;
  /** Set when the lab could not be verified at all here: which service it needs and how to get it. */
  unverified?: string;
}

/** The result for a lab whose specs could not run here for want of a service (`why`: one line). */
export function notVerified(lab: LabPackage, why: string): ContractResult {
  return {
    slug: lab.slug,
    ok: false,
    starterChanged: false,
    tests: 0,
    challenges: 0,
    wrongFixes: 0,
    problems: [],
    unverified: why,
  };
}

/**
 * True when git says the learner has edited one of the lab's exercise files. `LABS_STRICT=1` answers
 * false whatever git says: for whoever is writing a lab, whose edits to the starter are meant to hold.
 */
export function starterChanged(lab: LabPackage): boolean {
  if (process.env.LABS_STRICT === '1') return false;
  const diff = spawnSync('git', ['diff', '--quiet', 'HEAD', '--', ...lab.lab.exercise], { cwd: lab.dir });
  return diff.status === 1; // 0: unchanged; 1: changed; anything else (no git, no HEAD): assume unchanged
}

/**
 * Checks both runs, each wrong fix's run and the compiler's verdict against the contract; every breach
 * is one readable line in `problems`. The whole lab must type-check, except a starter the learner has edited, whose errors
 * are reported in `notes` with their file:line.
 */
export function checkContract(
  lab: LabPackage,
  starter: SpecRun,
  solution: SpecRun,
  typeErrors: CompilerError[] = [],
  wrongFixes: { fix: WrongFix; run: SpecRun }[] = [],
  changed = starterChanged(lab),
): ContractResult {
  const problems: string[] = [];
  const notes: string[] = [];
  for (const error of typeErrors) {
    const learners = changed && lab.lab.exercise.includes(error.file);
    (learners ? notes : problems).push(`type error: ${formatTypeError(error)}`);
  }
  if (solution.error) problems.push(`solution: the spec did not run: ${solution.error}`);
  if (!changed && starter.error) problems.push(`starter: the spec did not run: ${starter.error}`);
  const challenges = solution.tests.filter(isChallenge);
  if (!solution.error && challenges.length === 0) problems.push('the spec has no `challenge:` test');
  // A baseline may skip itself where it cannot apply (one database for every shard on the embedded
  // engine: there is none to refuse connections alone), and says so; a challenge may not, since it must
  // be able to fail.
  const skippedHere = (t: TestOutcome) => t.status === 'skipped' && !isChallenge(t);
  for (const t of solution.tests) {
    if (t.status !== 'passed' && !skippedHere(t))
      problems.push(`solution: "${t.fullName}" ${t.status}${t.failure ? `: ${t.failure}` : ''}`);
  }
  const skipped = solution.tests.filter(skippedHere);
  if (skipped.length > 0)
    notes.push(
      `${skipped.length} baseline test(s) skipped here, where they cannot apply: ${skipped.map((t) => `"${t.title}"`).join(', ')}`,
    );
  if (!changed && !starter.error) {
    const starterNames = new Set(starter.tests.map((t) => t.fullName));
    for (const t of solution.tests)
      if (!starterNames.has(t.fullName)) problems.push(`starter: "${t.fullName}" did not run`);
    for (const t of starter.tests) {
      if (isChallenge(t) && t.status !== 'failed')
        problems.push(`starter: challenge "${t.title}" ${t.status}, but it must fail on the starter`);
      if (!isChallenge(t) && t.status !== 'passed' && !skippedHere(t))
        problems.push(`starter: baseline "${t.fullName}" ${t.status}${t.failure ? `: ${t.failure}` : ''}`);
    }
  }
  for (const { fix, run } of wrongFixes) problems.push(...wrongFixProblems(fix, run));
  return {
    slug: lab.slug,
    ok: problems.length === 0,
    starterChanged: changed,
    tests: solution.tests.length,
    challenges: challenges.length,
    wrongFixes: wrongFixes.length,
    problems,
    ...(notes.length > 0 ? { notes } : {}),
  };
}
