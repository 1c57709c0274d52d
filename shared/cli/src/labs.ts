/** Finds the repository and its labs, each from its own package.json manifest. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { readLabPackage, type LabPackage } from '@labs/lab-kit/manifest';
import { c, LAB, UserError } from './ui.ts';

/** The monorepo root: the nearest folder above `from` holding pnpm-workspace.yaml. */
export function repoRoot(from = process.cwd()): string {
  let dir = from;
  while (!existsSync(join(dir, 'pnpm-workspace.yaml'))) {
    const parent = dirname(dir);
    if (parent === dir)
      throw new UserError('Not inside the Backend Labs repository (no pnpm-workspace.yaml above this folder).');
    dir = parent;
  }
  return dir;
}

/**
 * The Node major the project needs: the one rule, in .nvmrc. `./lab`, `bin/lab.js` (before any
 * TypeScript loads) and `doctor` all read it there; package.json's `engines` is checked against it.
 */
export function wantedNodeMajor(root = repoRoot()): number {
  return Number(readFileSync(join(root, '.nvmrc'), 'utf8').trim().replace(/^v/, ''));
}

/** The pnpm version package.json's packageManager pins (what ./lab installs). */
export function pinnedPnpm(root = repoRoot()): string {
  const { packageManager = '' } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    packageManager?: string;
  };
  return packageManager.replace(/^pnpm@/, '');
}

const labDirs = (root: string) => {
  const labsDir = join(root, 'labs');
  if (!existsSync(labsDir)) return [];
  return readdirSync(labsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(labsDir, d.name, 'package.json')))
    .map((d) => join(labsDir, d.name));
};

const byOrder = (a: LabPackage, b: LabPackage) => a.lab.order - b.lab.order || a.slug.localeCompare(b.slug);

/** Every lab in labs/, in curriculum order. Throws on a malformed manifest (what `lab test` wants). */
export function listLabs(root = repoRoot()): LabPackage[] {
  return labDirs(root)
    .map((dir) => readLabPackage(dir))
    .sort(byOrder);
}

/**
 * Every readable lab in curriculum order, plus one line per folder whose manifest cannot be read (a lab
 * still being written): the learner's commands keep working and say what they skipped.
 */
export function loadLabs(root = repoRoot()): { labs: LabPackage[]; problems: string[] } {
  const labs: LabPackage[] = [];
  const problems: string[] = [];
  for (const dir of labDirs(root)) {
    try {
      labs.push(readLabPackage(dir));
    } catch (error) {
      problems.push(`${relative(root, dir)}: ${(error as Error).message}`);
    }
  }
  return { labs: labs.sort(byOrder), problems };
}

/** The solution twin of an exercise file: src/x.ts -> solution/x.ts (the anatomy of LABS.md). */
export const solutionFile = (exercise: string) => exercise.replace(/^src\//, 'solution/');

/** The lab called `name`, or a UserError with a "did you mean" (exit 2). */
export function findLab(labs: LabPackage[], name: string | undefined, command: string): LabPackage {
  if (!name)
    throw new UserError(
      `Which lab? Usage: ${LAB} ${command} <lab>. Labs: ${labs.map((l) => l.slug).join(', ') || '(none yet)'}`,
    );
  const lab = labs.find((l) => l.slug === name);
  if (lab) return lab;
  const guess = didYouMean(
    name,
    labs.map((l) => l.slug),
  );
  throw new UserError(
    `There is no lab called "${name}".${guess ? ` Did you mean ${c.bold(guess)}?` : ''} Run ${c.cyan(`${LAB} list`)} to see them all.`,
  );
}

/** Edit distance, for "did you mean". Small inputs only (lab and command names). */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length]!;
}

/** The closest of `candidates` to `input`, if it is close enough to be a likely typo. */
export function didYouMean(input: string, candidates: string[]): string | undefined {
  const scored = candidates
    .map((c) => ({ c, d: c.startsWith(input) || input.startsWith(c) ? 1 : distance(input, c) }))
    .sort((x, y) => x.d - y.d);
  const best = scored[0];
  return best && best.d <= Math.max(2, Math.floor(best.c.length / 3)) ? best.c : undefined;
}
