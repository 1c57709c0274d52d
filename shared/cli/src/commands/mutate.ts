/**
 * `lab mutate <slug>`: Stryker over the lab's solution file(s), with the lab's own spec as the judge.
 * Stryker changes the solution one small mistake at a time (a `>=` made `>`, a TTL made 0, a line
 * removed) and reruns the tests that cover it; a mutant the spec does not notice is a gap in the spec.
 * The command prints the mutation score and every surviving mutant as `file:line`, writes the same to
 * the lab's `.lab/mutants.txt`, and keeps Stryker's incremental result in
 * `test/mutation/stryker-incremental.json` (committed), so the next run re-tests only the mutants whose
 * code or covering tests changed.
 *
 * Why these settings: the machine is shared and a run is CPU-heavy, so one test runner at a time
 * (`concurrency: 1`) and `perTest` coverage (each mutant runs only the tests that reach it). No
 * type-checker plugin: it needs the TypeScript compiler's JavaScript API, which TypeScript 7 lacks; a
 * mutant that does not type-check runs anyway (Node strips the types) and is judged by the tests.
 * A mutant the team judges equivalent is marked in the code, with its reason, by Stryker's own comment:
 * `// Stryker disable next-line <Mutator>: <why it cannot change behaviour>`; it is then counted apart.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { onInterrupt, spawnGroup } from '../child.ts';
import { solutionFile } from '../labs.ts';
import { labServices, releaseServices } from '../services.ts';
import { c, LAB, say, UserError } from '../ui.ts';

/** The share of mutants a lab's spec must kill (issue #23). */
export const MUTATION_GOAL = 85;

/** Where a lab keeps Stryker's incremental result (committed) and this command's outputs (ignored). */
export const INCREMENTAL_FILE = 'test/mutation/stryker-incremental.json';
const REPORT_FILE = '.lab/mutation.json';
const CONFIG_FILE = '.lab/stryker.config.json';
const SURVIVORS_FILE = '.lab/mutants.txt';

/** A lab, as the command line reads it. */
type MutatedLab = Parameters<typeof labServices>[0];

/** One mutant as Stryker's JSON report (mutation-testing-report-schema) describes it. */
interface ReportedMutant {
  mutatorName: string;
  replacement?: string;
  status: 'Killed' | 'Survived' | 'NoCoverage' | 'Timeout' | 'CompileError' | 'RuntimeError' | 'Ignored' | 'Pending';
  statusReason?: string;
  location: { start: { line: number; column: number }; end: { line: number; column: number } };
}

/** The report's part this command reads. */
interface MutationReport {
  files: Record<string, { source: string; mutants: ReportedMutant[] }>;
}

/** A surviving (or never reached) mutant, said in one line. */
export interface Survivor {
  /** `solution/x.ts:12:7`, relative to the lab. */
  where: string;
  mutator: string;
  /** `original → replacement`, each squeezed to one short line. */
  change: string;
  /** True when no test even ran the mutated code. */
  noCoverage: boolean;
}

/** The figures of one run. */
export interface MutationSummary {
  /** Killed (or timed out) over killed + survived + not covered, in percent, one decimal. */
  score: number;
  mutants: number;
  killed: number;
  survived: number;
  noCoverage: number;
  /** Marked equivalent in the code (`// Stryker disable ...: reason`). */
  ignored: number;
  /** Mutants that could not run (a syntax or runtime error the mutation itself caused). */
  invalid: number;
  survivors: Survivor[];
}

/** Stryker's options for `lab`, with paths relative to the lab folder (Stryker's working directory). */
export function strykerConfig(lab: MutatedLab): Record<string, unknown> {
  return {
    testRunner: 'vitest',
    // By path: pnpm gives Stryker's core no access to plugins it does not depend on.
    plugins: [fileURLToPath(import.meta.resolve('@stryker-mutator/vitest-runner'))],
    vitest: { configFile: 'vitest.config.ts' },
    mutate: lab.lab.exercise.map(solutionFile),
    coverageAnalysis: 'perTest',
    concurrency: 1,
    // A mutant that makes its tests outlast their time on the unmutated code by this factor (plus
    // timeoutMS) counts as killed. Stryker's 1.5 is too tight on a shared machine: a test that takes
    // twice as long under load would count as a kill it never made.
    timeoutFactor: 3,
    incremental: true,
    incrementalFile: INCREMENTAL_FILE,
    reporters: ['progress-append-only', 'json'],
    jsonReporter: { fileName: REPORT_FILE },
    // Copied into the sandbox: everything but this command's own outputs, caches and bench results.
    ignorePatterns: ['.lab', '.turbo', 'load/results', 'test/mutation'],
    tempDirName: '.stryker-tmp',
    cleanTempDir: true,
    logLevel: 'warn',
    fileLogLevel: 'off',
    thresholds: { high: 95, low: MUTATION_GOAL, break: null },
  };
}

/** One line of code, squeezed: whitespace runs made one space, cut at `max` characters. */
const squeeze = (text: string, max = 70) => {
  const one = text.replace(/\s+/g, ' ').trim();
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
};

/** The text between two 1-based line / 0-based column positions of `source`. */
function sourceBetween(source: string, location: ReportedMutant['location']): string {
  const lines = source.split('\n');
  const { start, end } = location;
  if (start.line === end.line) return (lines[start.line - 1] ?? '').slice(start.column - 1, end.column - 1);
  const first = (lines[start.line - 1] ?? '').slice(start.column - 1);
  const middle = lines.slice(start.line, end.line - 1);
  const last = (lines[end.line - 1] ?? '').slice(0, end.column - 1);
  return [first, ...middle, last].join('\n');
}

/** Reads Stryker's JSON report into the figures this command prints. */
export function summarise(report: MutationReport, labDir: string): MutationSummary {
  const summary: MutationSummary = {
    score: 0,
    mutants: 0,
    killed: 0,
    survived: 0,
    noCoverage: 0,
    ignored: 0,
    invalid: 0,
    survivors: [],
  };
  for (const [file, { source, mutants }] of Object.entries(report.files)) {
    const shown = relative(labDir, join(labDir, file));
    for (const m of mutants) {
      summary.mutants++;
      if (m.status === 'Killed' || m.status === 'Timeout') summary.killed++;
      else if (m.status === 'Ignored') summary.ignored++;
      else if (m.status === 'CompileError' || m.status === 'RuntimeError') summary.invalid++;
      else if (m.status === 'Survived' || m.status === 'NoCoverage') {
        if (m.status === 'Survived') summary.survived++;
        else summary.noCoverage++;
        const original = squeeze(sourceBetween(source, m.location), 50);
        summary.survivors.push({
          where: `${shown}:${m.location.start.line}:${m.location.start.column}`,
          mutator: m.mutatorName,
          change: `${original} → ${squeeze(m.replacement ?? '', 50) || '(removed)'}`,
          noCoverage: m.status === 'NoCoverage',
        });
      }
    }
  }
  const judged = summary.killed + summary.survived + summary.noCoverage;
  summary.score = judged === 0 ? 100 : Math.round((summary.killed / judged) * 1000) / 10;
  summary.survivors.sort((a, b) => a.where.localeCompare(b.where, undefined, { numeric: true }));
  return summary;
}

/** What the command prints and writes to `.lab/mutants.txt`. */
export function describeSummary(slug: string, s: MutationSummary, minutes: number): string[] {
  const lines = [
    `${slug}: mutation score ${s.score}% (${s.killed} of ${s.killed + s.survived + s.noCoverage} mutants killed; goal ${MUTATION_GOAL}%)`,
    `  ${s.mutants} mutants: ${s.killed} killed, ${s.survived} survived, ${s.noCoverage} not covered by any test, ${s.ignored} marked equivalent, ${s.invalid} invalid; ${minutes} min`,
  ];
  if (s.survivors.length > 0)
    lines.push('', 'Surviving mutants (kill each with a test, or mark it equivalent with a reason):');
  for (const v of s.survivors)
    lines.push(`  ${v.where}  ${v.mutator}${v.noCoverage ? ' (no test reaches it)' : ''}: ${v.change}`);
  return lines;
}

/**
 * Runs Stryker over `lab`'s solution with its spec, prints the score and the survivors, and writes
 * them to the lab's `.lab/mutants.txt`. Returns 0 once a run completed (with `check`, only when the
 * score reaches {@link MUTATION_GOAL}), 1 when Stryker itself failed, 130 after Ctrl-C.
 */
export async function mutate(lab: MutatedLab, options: { check?: boolean } = {}): Promise<number> {
  const files = lab.lab.exercise.map(solutionFile);
  for (const file of files)
    if (!existsSync(join(lab.dir, file))) throw new UserError(`${lab.slug} has no ${file}: nothing to mutate.`, 1);
  mkdirSync(join(lab.dir, '.lab'), { recursive: true });
  mkdirSync(join(lab.dir, 'test', 'mutation'), { recursive: true });
  writeFileSync(join(lab.dir, CONFIG_FILE), `${JSON.stringify(strykerConfig(lab), null, 2)}\n`);
  const incremental = existsSync(join(lab.dir, INCREMENTAL_FILE));
  say(
    c.dim(
      `Mutating ${files.join(', ')} against ${lab.slug}'s spec (one test runner; ${incremental ? `only what changed since ${INCREMENTAL_FILE}` : 'a full run, several minutes'}).`,
    ),
  );

  let interrupted = false;
  let child: ReturnType<typeof spawnGroup> | undefined;
  const release = onInterrupt(() => {
    interrupted = true;
    void child?.stop();
  });
  const startedAt = performance.now();
  let code: number;
  try {
    const env = await labServices(lab);
    if (interrupted) return 130;
    const stryker = fileURLToPath(
      new URL('./bin/stryker.js', import.meta.resolve('@stryker-mutator/core/package.json')),
    );
    child = spawnGroup(process.execPath, [stryker, 'run', CONFIG_FILE], {
      cwd: lab.dir,
      stdio: ['ignore', 'inherit', 'inherit'],
      // The spec runs against the solution: the same switch `lab check` makes.
      env: { ...process.env, ...env, LAB_TARGET: 'solution' },
    });
    code = await child.exited;
  } finally {
    release();
    await releaseServices();
  }
  if (interrupted) return 130;
  if (code !== 0 || !existsSync(join(lab.dir, REPORT_FILE))) {
    say(c.red(`✗ Stryker did not finish (exit code ${code}); its messages are above.`));
    // The usual cause: Stryker's first run needs every test green on the unmutated solution.
    say(`  The solution must pass every test of the spec first: ${c.cyan(`${LAB} check ${lab.slug}`)}.`);
    return 1;
  }
  const minutes = Math.round((performance.now() - startedAt) / 6000) / 10;
  const summary = summarise(JSON.parse(readFileSync(join(lab.dir, REPORT_FILE), 'utf8')) as MutationReport, lab.dir);
  const lines = describeSummary(lab.slug, summary, minutes);
  writeFileSync(join(lab.dir, SURVIVORS_FILE), `${lines.join('\n')}\n`);
  const reached = summary.score >= MUTATION_GOAL;
  say();
  say(`${reached ? c.green('✓') : c.yellow('!')} ${lines[0]}`);
  for (const line of lines.slice(1)) say(line);
  say(c.dim(`Written to ${SURVIVORS_FILE}; Stryker's incremental result: ${INCREMENTAL_FILE} (commit it).`));
  return options.check && !reached ? 1 : 0;
}
