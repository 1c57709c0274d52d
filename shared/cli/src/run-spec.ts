/**
 * Runs a lab's spec with vitest against one target and returns what each test did, read from vitest's
 * JSON report rather than from its console output.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stripVTControlCharacters } from 'node:util';
import type { LabTarget } from '@labs/lab-kit';
import type { LabPackage } from '@labs/lab-kit/manifest';
import { spawnGroup } from './child.ts';

/** Which implementation a spec runs against (the lab kit's one definition). */
export type Target = LabTarget;

/** One test's outcome. */
export interface TestOutcome {
  /** The test's own name, e.g. "challenge: three instances ..." */
  title: string;
  /** describe blocks and title joined */
  fullName: string;
  status: 'passed' | 'failed' | 'skipped' | 'todo' | 'pending';
  /** The first line of the assertion message when it failed. */
  failure?: string;
}

/** The outcome of one run. `error` is set when vitest could not run the tests at all. */
export interface SpecRun {
  target: Target;
  tests: TestOutcome[];
  error?: string;
  /** True when the run was stopped through `signal` before it finished. */
  interrupted?: boolean;
}

/** Options for {@link runSpec}. */
export interface RunSpecOptions {
  /** Extra vitest arguments, e.g. a test name filter. */
  extraArgs?: string[];
  /** Receives vitest's console output as it comes. */
  onOutput?: (chunk: string) => void;
  /** Aborting stops the run: vitest then runs in its own process group, stopped as a whole. */
  signal?: AbortSignal;
  /** Extra environment for vitest (e.g. service URLs the command line has already resolved). */
  env?: NodeJS.ProcessEnv;
}

/** Path of the vitest CLI as installed for this lab (so each lab uses the repository's one version). */
function vitestBin(lab: LabPackage): string {
  const require = createRequire(join(lab.dir, 'package.json'));
  return join(require.resolve('vitest/package.json').replace(/package\.json$/, ''), 'vitest.mjs');
}

interface JsonReport {
  testResults?: {
    message?: string;
    assertionResults: { title: string; fullName: string; status: TestOutcome['status']; failureMessages: string[] }[];
  }[];
}

/** Strips ANSI colour codes from vitest's messages. */
const plain = (s: string) => stripVTControlCharacters(s);

/** Spec runs this process has started (each names its own report file). */
let runs = 0;
/** Batches this process has started (each names its own report file). */
let batches = 0;

/** Runs the spec of `lab` against `target`. Extra vitest arguments (e.g. a test name filter) may follow. */
export async function runSpec(lab: LabPackage, target: Target, options: RunSpecOptions = {}): Promise<SpecRun> {
  const outDir = join(lab.dir, '.lab');
  mkdirSync(outDir, { recursive: true });
  // One report per run: two runs of the same lab at once (a learner and CI, or two of one check's
  // runs) must not share a file.
  const report = join(outDir, `report-${target}-${process.pid}-${++runs}.json`);
  rmSync(report, { force: true });
  const args = [vitestBin(lab), 'run', '--reporter=json', `--outputFile=${report}`, ...(options.extraArgs ?? [])];
  const spawnOptions = {
    cwd: lab.dir,
    env: { ...process.env, ...options.env, LAB_TARGET: target, FORCE_COLOR: '0' },
    stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'],
  };
  let output = '';
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
    options.onOutput?.(chunk.toString());
  };
  let code: number;
  if (options.signal) {
    if (options.signal.aborted) return { target, tests: [], error: 'interrupted', interrupted: true };
    const child = spawnGroup(process.execPath, args, spawnOptions);
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    const stop = () => void child.stop();
    options.signal.addEventListener('abort', stop, { once: true });
    code = await child.exited;
    options.signal.removeEventListener('abort', stop);
    if (options.signal.aborted) {
      rmSync(report, { force: true });
      return { target, tests: [], error: 'interrupted', interrupted: true };
    }
  } else {
    code = await new Promise<number>((resolve) => {
      const child = spawn(process.execPath, args, spawnOptions);
      child.stdout.on('data', collect);
      child.stderr.on('data', collect);
      child.on('close', (c) => resolve(c ?? 1));
      child.on('error', (err) => {
        output += String(err);
        resolve(1);
      });
    });
  }
  let parsed: JsonReport | undefined;
  try {
    parsed = JSON.parse(readFileSync(report, 'utf8')) as JsonReport;
  } catch {
    parsed = undefined;
  }
  rmSync(report, { force: true });
  return specRunOf(target, parsed, output, code);
}

/** One run's outcome from its JSON report (undefined when vitest wrote none) and its console output. */
function specRunOf(target: Target, parsed: JsonReport | undefined, output: string, code: number): SpecRun {
  const tests: TestOutcome[] = (parsed?.testResults ?? []).flatMap((file) =>
    file.assertionResults.map((t) => ({
      title: t.title,
      fullName: t.fullName,
      status: t.status,
      failure: t.failureMessages[0] ? plain(t.failureMessages[0]).split('\n')[0] : undefined,
    })),
  );
  // A file that failed to load (a syntax error, a service that is down) has a message and no tests.
  const fileErrors = (parsed?.testResults ?? []).map((f) => f.message).filter((m): m is string => !!m);
  if (tests.length === 0 || fileErrors.length > 0) {
    const why =
      fileErrors.length > 0 ? fileErrors.map(plain).join('\n') : lastLines(output) || `vitest exited with code ${code}`;
    return { target, tests, error: why.trim() };
  }
  return { target, tests };
}

/** One run of a {@link runSpecBatch}: its name, target, wrong fix and test-name filter. */
export interface BatchRun {
  /** Unique in the batch: `starter`, `solution`, a wrong fix's file. */
  name: string;
  target: Target;
  /** A path in the lab that stands in for the exercise file. */
  wrongFix?: string;
  /** A vitest `-t` pattern: only the tests it matches run. */
  pattern?: string;
}

/** The key of the batch runner's report when the lab's config made no projects of the runs (spec-batch.ts). */
const UNSUPPORTED_BATCH = '(no projects)';

/** Where the batch runner lives (run by Node, which strips its types). */
const BATCH_RUNNER = fileURLToPath(new URL('./spec-batch.ts', import.meta.url));

/**
 * Runs several spec runs of `lab` in one vitest process (`spec-batch.ts`): one vitest project per run,
 * each with its own aliases and environment, each spec file in a fork of its own. What a run would pay
 * alone for vitest's start, the config and the global set-up is paid once. `LABS_SPEC_CONCURRENCY` forks
 * run at once. Resolves with each run's outcome and its seconds per step (fork, imports, tests), by name,
 * or with undefined when the lab's vitest config does not make a project per run (it is not the test
 * kit's `defineLabConfig`): then each run needs a process of its own.
 */
export async function runSpecBatch(
  lab: LabPackage,
  runs: BatchRun[],
  options: { env?: NodeJS.ProcessEnv } = {},
): Promise<Map<string, SpecRun & { steps?: Record<string, number> }> | undefined> {
  const outDir = join(lab.dir, '.lab');
  mkdirSync(outDir, { recursive: true });
  const report = join(outDir, `report-batch-${process.pid}-${++batches}.json`);
  rmSync(report, { force: true });
  const filters = Object.fromEntries(runs.flatMap((r) => (r.pattern === undefined ? [] : [[r.name, r.pattern]])));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...options.env,
    LAB_RUNS: JSON.stringify(runs.map(({ name, target, wrongFix }) => ({ name, target, wrongFix }))),
    LAB_RUN_FILTERS: JSON.stringify(filters),
    FORCE_COLOR: '0',
  };
  // The batch's runs say their own target and wrong fix; none inherits one meant for a single run.
  delete env.LAB_TARGET;
  delete env.LAB_WRONG_FIX;
  let output = '';
  const code = await new Promise<number>((resolve) => {
    const child = spawn(process.execPath, [BATCH_RUNNER, report], {
      cwd: lab.dir,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('close', (c) => resolve(c ?? 1));
    child.on('error', (err) => {
      output += String(err);
      resolve(1);
    });
  });
  let parsed: Record<string, JsonReport & { steps?: Record<string, number> }> = {};
  try {
    parsed = JSON.parse(readFileSync(report, 'utf8'));
  } catch {
    // No report: the batch could not start (its output says why); each run says so below.
  }
  rmSync(report, { force: true });
  if (parsed[UNSUPPORTED_BATCH]) return undefined;
  return new Map(
    runs.map((run) => {
      const mine = parsed[run.name];
      return [
        run.name,
        { ...specRunOf(run.target, mine, output, code), ...(mine?.steps ? { steps: mine.steps } : {}) },
      ];
    }),
  );
}

/** The meaningful end of a noisy output, for error messages. */
function lastLines(text: string, n = 12): string {
  return plain(text)
    .trim()
    .split('\n')
    .filter((l) => !l.includes('npm warn'))
    .slice(-n)
    .join('\n');
}

/** True for tests named `challenge: ...`: they must fail on the starter and pass on the solution. */
export const isChallenge = (t: TestOutcome) => t.title.startsWith('challenge:');
