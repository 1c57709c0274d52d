/**
 * Commands that change files or progress (run, reset, diff, hint, list status), run against a throwaway
 * git repository holding two small labs, so the tests never touch the real labs or the learner's
 * progress. It lives in this package's git-ignored .lab/ folder so the fixture's spec finds vitest.
 */
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTwoFilesPatch } from 'diff';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasStackTrace, lab, repo } from './helpers.ts';

const STARTER = 'export const count = (xs: number[]) => xs.length; // TODO(lab): count only positives\n';
const SOLUTION = 'export const count = (xs: number[]) => xs.filter((x) => x > 0).length;\n';

let root: string;
let state: string;
const exercise = () => join(root, 'labs', 'demo', 'src', 'counter.ts');
const run = (args: string[]) => lab(args, { cwd: join(root, 'labs', 'demo'), env: { LABS_STATE_DIR: state } });
const setProgress = (progress: object) => writeFileSync(join(state, 'progress.json'), JSON.stringify(progress));

beforeAll(() => {
  const scratch = fileURLToPath(new URL('../.lab/', import.meta.url));
  mkdirSync(scratch, { recursive: true });
  root = mkdtempSync(join(scratch, 'fixture-'));
  state = mkdtempSync(join(tmpdir(), 'lab-cli-state-'));
  const dir = join(root, 'labs', 'demo');
  mkdirSync(join(dir, 'src'), { recursive: true });
  mkdirSync(join(dir, 'solution'), { recursive: true });
  writeFileSync(join(root, 'pnpm-workspace.yaml'), 'packages:\n  - labs/*\n');
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify({
      name: '@labs/demo',
      private: true,
      type: 'module',
      lab: {
        order: 1,
        title: 'Demo',
        topic: 'Counting things',
        difficulty: 'easy',
        services: [],
        exercise: ['src/counter.ts'],
        hints: ['Look at the sign.', 'Filter before counting.'],
      },
    }),
  );
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        module: 'nodenext',
        target: 'es2024',
        types: [],
        allowImportingTsExtensions: true,
      },
      include: ['src', 'solution'],
    }),
  );
  mkdirSync(join(dir, 'test'), { recursive: true });
  writeFileSync(
    join(dir, 'test', 'counter.test.ts'),
    [
      "import { expect, it } from 'vitest';",
      // The switch the test kit's vitest config makes with aliases, written out for this config-less fixture.
      "const file = process.env.LAB_WRONG_FIX ? '../' + process.env.LAB_WRONG_FIX : process.env.LAB_TARGET === 'solution' ? '../solution/counter.ts' : '../src/counter.ts';",
      'const { count } = await import(file);',
      "it('counts an empty list as zero', () => expect(count([])).toBe(0));",
      "it('challenge: ignores negative numbers', () => expect(count([1, -1, 2]), 'negatives must not count').toBe(2));",
      '',
    ].join('\n'),
  );
  const next = join(root, 'labs', 'second');
  mkdirSync(next, { recursive: true });
  writeFileSync(
    join(next, 'package.json'),
    JSON.stringify({
      name: '@labs/second',
      private: true,
      type: 'module',
      lab: {
        order: 2,
        title: 'Second',
        topic: 'The next one',
        difficulty: 'medium',
        services: [],
        exercise: ['src/x.ts'],
        hints: [],
      },
    }),
  );
  writeFileSync(join(dir, 'src', 'counter.ts'), STARTER);
  writeFileSync(join(dir, 'solution', 'counter.ts'), SOLUTION);
  const git = (...args: string[]) =>
    execFileSync('git', ['-c', 'user.email=t@example.com', '-c', 'user.name=t', ...args], {
      cwd: root,
      stdio: 'ignore',
    });
  git('init', '-q');
  git('add', '.');
  git('commit', '-q', '-m', 'fixture');
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
  rmSync(state, { recursive: true, force: true });
});

describe('pnpm lab <lab>: the report on your code', () => {
  it('shows which baseline tests pass, which challenge fails and why, and the next hint', async () => {
    const r = await run(['demo']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('Baseline: 1 of 1 pass');
    expect(r.stdout).toContain('✓ counts an empty list as zero');
    expect(r.stdout).toContain('Challenges: 0 of 1 pass');
    expect(r.stdout).toMatch(
      /✗ ignores negative numbers\n\s+AssertionError: negatives must not count: expected 3 to be 2/,
    );
    expect(r.stdout).toContain('pnpm lab hint demo');
    expect(JSON.parse(readFileSync(join(state, 'progress.json'), 'utf8')).demo.status).toBe('in progress');
  });

  it('once every challenge passes: solved, and what next (bench, debrief, the next lab)', async () => {
    writeFileSync(exercise(), SOLUTION);
    const r = await run(['demo']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('All 2 tests pass. Lab solved.');
    expect(r.stdout).toContain('pnpm lab bench demo');
    expect(r.stdout).toContain('labs/demo/README.md');
    expect(r.stdout).toContain('pnpm lab second');
    expect(JSON.parse(readFileSync(join(state, 'progress.json'), 'utf8')).demo.status).toBe('solved');
    expect((await run(['list'])).stdout).toMatch(/demo\s+solved/);
    expect((await run(['diff', 'demo'])).stdout).toContain('line for line');
    writeFileSync(exercise(), STARTER);
  });
});

describe('hint', () => {
  it('shows one hint at a time and remembers the level', async () => {
    const first = await run(['hint', 'demo']);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain('Hint 1 of 2');
    expect(first.stdout).toContain('Look at the sign.');
    const second = await run(['hint', 'demo']);
    expect(second.stdout).toContain('Hint 2 of 2');
    expect(second.stdout).toContain('Filter before counting.');
    const progress = JSON.parse(readFileSync(join(state, 'progress.json'), 'utf8'));
    expect(progress.demo.hintLevel).toBe(2);
  });
});

describe('list', () => {
  it('shows the status of the last run from the progress file', async () => {
    setProgress({ demo: { status: 'in progress', hintLevel: 0 } });
    expect((await run(['list'])).stdout).toMatch(/demo\s+in progress/);
    setProgress({ demo: { status: 'solved', hintLevel: 0 } });
    expect((await run(['list'])).stdout).toMatch(/demo\s+solved/);
  });
});

describe('diff', () => {
  it('is held back until the lab is solved, and says how to see it anyway', async () => {
    setProgress({ demo: { status: 'in progress', hintLevel: 0 } });
    const r = await run(['diff', 'demo']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('pnpm lab diff demo --force');
    expect(r.stdout).not.toContain('filter');
  });

  it('shows a unified diff of the exercise against solution/ with --force', async () => {
    const r = await run(['diff', 'demo', '--force']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--- a/src/counter.ts');
    expect(r.stdout).toContain('+++ b/solution/counter.ts');
    expect(r.stdout).toContain('+export const count = (xs: number[]) => xs.filter((x) => x > 0).length;');
  });

  it('is offered without --force once solved', async () => {
    setProgress({ demo: { status: 'solved', hintLevel: 0 } });
    const r = await run(['diff', 'demo']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('-export const count = (xs: number[]) => xs.length;');
  });
});

describe('reset', () => {
  it('refuses without a terminal and without --yes', async () => {
    writeFileSync(exercise(), 'export const count = () => 42;\n');
    const r = await run(['reset', 'demo']);
    expect(r.code).toBe(2);
    expect(readFileSync(exercise(), 'utf8')).toBe('export const count = () => 42;\n');
    expect(hasStackTrace(r.out)).toBe(false);
  });

  it('puts the starter back from git with --yes and clears the progress of that lab', async () => {
    writeFileSync(exercise(), 'export const count = () => 42;\n');
    setProgress({ demo: { status: 'solved', hintLevel: 2 }, other: { status: 'solved', hintLevel: 0 } });
    const r = await run(['reset', 'demo', '--yes']);
    expect(r.code).toBe(0);
    expect(readFileSync(exercise(), 'utf8')).toBe(STARTER);
    const progress = JSON.parse(readFileSync(join(state, 'progress.json'), 'utf8'));
    expect(progress.demo).toBeUndefined();
    expect(progress.other.status).toBe('solved');
  });
});

describe('check (what pnpm test runs in each lab)', () => {
  it('does not hold a starter the learner edited to the contract, unless LABS_STRICT=1 asks it to', async () => {
    writeFileSync(exercise(), SOLUTION); // the learner solved it: the challenge now passes on src/
    try {
      const learner = await run(['check']);
      expect(learner.code).toBe(0);
      expect(learner.stdout).toContain('starter changed by the learner: not held to the contract');
      const strict = await lab(['check'], {
        cwd: join(root, 'labs', 'demo'),
        env: { LABS_STATE_DIR: state, LABS_STRICT: '1' },
      });
      expect(strict.code).toBe(1);
      expect(strict.stdout).toContain(
        'challenge "challenge: ignores negative numbers" passed, but it must fail on the starter',
      );
    } finally {
      writeFileSync(exercise(), STARTER);
    }
  });
});

describe('check: wrong fixes', () => {
  it('runs the spec against each wrong fix and breaks the contract when one passes the challenge meant to catch it', async () => {
    const dir = join(root, 'labs', 'demo', 'test', 'wrong-fixes');
    mkdirSync(dir, { recursive: true });
    const caught = join(dir, 'abs.ts');
    const abs =
      '// Counts every number by its size: negatives still count.\n// @catches ignores negative numbers\nexport const count = (xs: number[]) => xs.map(Math.abs).filter((x) => x > 0).length;\n';
    writeFileSync(caught, abs);
    try {
      const ok = await run(['check']);
      expect(ok.stdout, ok.out).toContain('1 wrong fixes caught');
      expect(ok.code).toBe(0);
      // The same mistake as a patch against the solution: applied, run, caught; one that no longer
      // applies is a broken contract of its own.
      const patch = createTwoFilesPatch(
        'a/solution/counter.ts',
        'b/solution/counter.ts',
        SOLUTION,
        SOLUTION.replace('x > 0', 'x !== 0'),
      );
      writeFileSync(
        join(dir, 'not-zero.patch'),
        `Counts everything but zeros.\n@catches ignores negative numbers\n\n${patch}`,
      );
      // A second mistake in the whole-file wrong fix's design: a patch that names it as its base.
      writeFileSync(
        join(dir, 'abs-and-zeros.patch'),
        `Counts zeros too.\n@catches ignores negative numbers\n\n${createTwoFilesPatch(
          'a/test/wrong-fixes/abs.ts',
          'b/test/wrong-fixes/abs.ts',
          abs,
          abs.replace('x > 0', 'x >= 0'),
        )}`,
      );
      const patched = await run(['check']);
      expect(patched.stdout, patched.out).toContain('3 wrong fixes caught');
      writeFileSync(
        join(dir, 'stale.patch'),
        `@catches ignores negative numbers\n\n${patch.replaceAll('x > 0', 'x >= 1')}`,
      );
      const stale = await run(['check']);
      expect(stale.code).toBe(1);
      expect(stale.stdout).toContain(
        'wrong fix test/wrong-fixes/stale.patch: the spec did not run: the patch no longer applies',
      );
      rmSync(join(dir, 'stale.patch'));
      rmSync(join(dir, 'not-zero.patch'));
      rmSync(join(dir, 'abs-and-zeros.patch'));
      const escaped = join(dir, 'really-right.ts');
      writeFileSync(escaped, `// @catches ignores negative numbers\n${SOLUTION}`);
      const broken = await run(['check']);
      expect(broken.code).toBe(1);
      expect(broken.stdout).toContain(
        'wrong fix test/wrong-fixes/really-right.ts passed "ignores negative numbers", the test that must catch it',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('check: the compiler', () => {
  it("reports a type error in the learner's starter with its file:line, without failing their run", async () => {
    writeFileSync(exercise(), "export const count = (xs: number[]): number => xs.join(',');\n");
    try {
      const r = await run(['check']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(
        /type error: src\/counter\.ts:1 TS2322: Type 'string' is not assignable to type 'number'/,
      );
      expect(hasStackTrace(r.out)).toBe(false);
    } finally {
      writeFileSync(exercise(), STARTER);
    }
  });

  it('breaks the contract when the reference solution does not type-check', async () => {
    const solution = join(root, 'labs', 'demo', 'solution', 'counter.ts');
    writeFileSync(solution, "export const count = (xs: number[]): number => xs.filter((x) => x > 0).length + '';\n");
    try {
      const r = await run(['check']);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/type error: solution\/counter\.ts:1 TS2322/);
    } finally {
      writeFileSync(solution, SOLUTION);
    }
  });
});

describe('pnpm lab new', () => {
  it('scaffolds a lab whose contract holds at once, and that git clean removes again', async () => {
    // The scaffold resolves the shared packages from the repository root, as in a fresh clone.
    rmSync(join(root, 'node_modules'), { recursive: true, force: true }); // vitest's cache from the runs above
    symlinkSync(join(repo, 'node_modules'), join(root, 'node_modules'));
    copyFileSync(join(repo, 'tsconfig.base.json'), join(root, 'tsconfig.base.json'));
    const made = await lab(['new', 'word-count'], { cwd: root, env: { LABS_STATE_DIR: state } });
    expect(made.code, made.out).toBe(0);
    expect(made.stdout).toContain('Scaffolded labs/word-count');
    const checked = await lab(['check', 'word-count'], { cwd: root, env: { LABS_STATE_DIR: state } });
    expect(checked.stdout, checked.out).toContain('✓ word-count: solution 3/3 pass; starter fails all 1 challenges');
    expect(checked.code).toBe(0);
    const again = await lab(['new', 'word-count'], { cwd: root });
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('labs/word-count already exists');
    const bad = await lab(['new', 'Word_Count'], { cwd: root });
    expect(bad.code).toBe(2);
    expect(hasStackTrace(bad.out)).toBe(false);
    execFileSync('git', ['clean', '-fdxq', 'labs/word-count'], { cwd: root });
    expect(existsSync(join(root, 'labs', 'word-count'))).toBe(false);
  });
});

describe('outside the repository', () => {
  it('says so instead of failing with a stack trace', async () => {
    const r = await lab(['list'], { cwd: tmpdir() });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Not inside the Backend Labs repository');
    expect(hasStackTrace(r.out)).toBe(false);
  });
});
