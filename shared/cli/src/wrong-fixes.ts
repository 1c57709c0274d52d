/**
 * Wrong fixes: versions of the learner's file that a real developer might write and that are still
 * wrong, kept in a lab's test/wrong-fixes/. Each names, in `@catches <test title>` lines, the tests
 * that must fail on it: usually challenges (written without their `challenge: ` prefix), sometimes a
 * baseline test (a wrong fix can break what the starter got right). The contract runs the spec against each one: a wrong fix that
 * passes a challenge meant to catch it means the spec would tell a learner with that bug "done".
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabPackage } from '@labs/test-kit';
import { runSpec, type SpecRun } from './run-spec.ts';

/** One wrong fix and the titles of the tests that must catch it (challenges without `challenge: `). */
export interface WrongFix {
  /** Path in the lab, e.g. test/wrong-fixes/get-then-set.ts */
  file: string;
  catches: string[];
}

/** The lab's wrong fixes, in file-name order. */
export function listWrongFixes(lab: LabPackage): WrongFix[] {
  const dir = join(lab.dir, 'test', 'wrong-fixes');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith('.ts'))
    .sort()
    .map((name) => {
      const text = readFileSync(join(dir, name), 'utf8');
      const catches = [...text.matchAll(/@catches\s+(.+?)\s*$/gm)].map((m) => m[1]!.replace(/^challenge:\s*/, ''));
      return { file: `test/wrong-fixes/${name}`, catches };
    });
}

/** Escapes `text` for a regular expression (vitest's -t takes one). */
const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The spec run against `fix` in place of the learner's file, limited to the challenges it names. */
export function runWrongFix(lab: LabPackage, fix: WrongFix): Promise<SpecRun> {
  const pattern = fix.catches.map((title) => `(challenge: )?${escapeRegExp(title)}`).join('|');
  return runSpec(lab, 'starter', { env: { LAB_WRONG_FIX: fix.file }, extraArgs: ['-t', pattern] });
}

/** Breaches of the contract by one wrong fix's run, one readable line each. */
export function wrongFixProblems(fix: WrongFix, run: SpecRun): string[] {
  if (fix.catches.length === 0)
    return [`wrong fix ${fix.file} names no challenge (add a line: @catches <challenge title>)`];
  if (run.error) return [`wrong fix ${fix.file}: the spec did not run: ${run.error.split('\n')[0]}`];
  return fix.catches.flatMap((title) => {
    const test = run.tests.find((t) => t.title === `challenge: ${title}` || t.title === title);
    if (!test) return [`wrong fix ${fix.file} names "${title}", which is not a test of this spec`];
    if (test.status === 'failed') return [];
    return [`wrong fix ${fix.file} ${test.status} "${title}", the test that must catch it`];
  });
}
