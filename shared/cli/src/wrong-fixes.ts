/**
 * Wrong fixes: versions of the learner's file that a real developer might write and that are still
 * wrong, kept in a lab's test/wrong-fixes/. Each names, in `@catches <test title>` lines, the tests
 * that must fail on it: usually challenges (written without their `challenge: ` prefix), sometimes a
 * baseline test (a wrong fix can break what the starter got right). The contract runs the spec
 * against each one: a wrong fix that passes a test meant to catch it means the spec would tell a
 * learner with that bug "done".
 *
 * A wrong fix is either a whole file (`name.ts`) or, when it is the reference solution (or the
 * starter) with one mistake (or one mend), that change alone: `name.patch`, a unified diff against
 * that file's code below its opening comment, after a preamble that says why it is wrong. A patch reads as the bug itself and
 * cannot drift from the solution unnoticed: one that no longer applies breaks the contract. A patch
 * may also name a whole-file wrong fix of the same folder as its base: a second mistake in the same
 * other design, written as the one line it changes instead of a copy of the whole file.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { applyPatch, parsePatch } from 'diff';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { solutionFile } from './labs.ts';
import { runSpec, type SpecRun } from './run-spec.ts';

/** One wrong fix and the titles of the tests that must catch it (challenges without `challenge: `). */
export interface WrongFix {
  /** Path in the lab, e.g. test/wrong-fixes/get-then-set.ts */
  file: string;
  catches: string[];
  /**
   * Why the fix cannot be judged on the embedded engine, from an `@server-only <why>` line: its catching
   * test forces an interleaving with a session of its own, and PGlite serves one session at a time.
   */
  serverOnly?: string;
}

/** The lab's wrong fixes, in file-name order. */
export function listWrongFixes(lab: LabPackage): WrongFix[] {
  const dir = join(lab.dir, 'test', 'wrong-fixes');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith('.ts') || name.endsWith('.patch'))
    .sort()
    .map((name) => {
      const text = readFileSync(join(dir, name), 'utf8');
      const catches = [...text.matchAll(/@catches\s+(.+?)\s*$/gm)].map((m) => m[1]!.replace(/^challenge:\s*/, ''));
      const serverOnly = /@server-only\s+(.+?)\s*$/m.exec(text)?.[1];
      return { file: `test/wrong-fixes/${name}`, catches, ...(serverOnly ? { serverOnly } : {}) };
    });
}

/** Escapes `text` for a regular expression (vitest's -t takes one). */
const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A file's text without its opening block comment (the part a wrong fix's patch leaves alone). */
export const withoutOpeningComment = (text: string) => text.replace(/^\/\*\*[\s\S]*?\*\/\n+/, '');

/**
 * The wrong fix as a file the spec can import: a `.ts` as it is; a `.patch` applied to the file its
 * header names (the solution, the starter or a whole-file wrong fix, below their opening comment) and
 * written beside it, so its relative imports resolve; or undefined when it no longer applies.
 */
export function materialize(lab: LabPackage, fix: WrongFix): { path: string; remove(): void } | undefined {
  if (fix.file.endsWith('.ts')) return { path: fix.file, remove: () => {} };
  const text = readFileSync(join(lab.dir, fix.file), 'utf8');
  const exercise = lab.lab.exercise[0]!;
  const named = parsePatch(text)[0]?.oldFileName?.replace(/^a\//, '');
  const base =
    named === exercise || (named?.startsWith('test/wrong-fixes/') && named.endsWith('.ts'))
      ? named
      : solutionFile(exercise);
  const source = withoutOpeningComment(readFileSync(join(lab.dir, base), 'utf8'));
  const patched = applyPatch(source, text);
  if (patched === false) return undefined;
  const path = join(dirname(base), `.wrong-fix-${process.pid}-${basename(fix.file, '.patch')}.ts`);
  writeFileSync(join(lab.dir, path), `// Written by lab check from ${fix.file}; deleted after the run.\n${patched}`);
  return { path, remove: () => rmSync(join(lab.dir, path), { force: true }) };
}

/** A vitest `-t` pattern for the tests `fix` names (a challenge with or without its `challenge: `). */
export const catchingTests = (fix: WrongFix) =>
  fix.catches.map((title) => `(challenge: )?${escapeRegExp(title)}`).join('|');

/** The run of a patch that no longer applies: it could not be judged, which breaks the contract. */
export const notApplied: SpecRun = {
  target: 'starter',
  tests: [],
  error: 'the patch no longer applies to the file it names',
};

/** The spec run against `fix` in place of the learner's file, limited to the tests it names. */
export async function runWrongFix(
  lab: LabPackage,
  fix: WrongFix,
  options: { env?: NodeJS.ProcessEnv } = {},
): Promise<SpecRun> {
  const file = materialize(lab, fix);
  if (!file) return notApplied;
  try {
    return await runSpec(lab, 'starter', {
      env: { ...options.env, LAB_WRONG_FIX: file.path },
      extraArgs: ['-t', catchingTests(fix)],
    });
  } finally {
    file.remove();
  }
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
