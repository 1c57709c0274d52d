/**
 * Several spec runs of one lab in one vitest process, for `lab check`: run as
 * `node spec-batch.ts <report.json>` in the lab's folder, with `LAB_RUNS` (the runs: name, target, wrong
 * fix) and `LAB_RUN_FILTERS` (each run's test-name pattern, if it has one) in the environment.
 *
 * The lab's vitest config (the test kit's `defineLabConfig`) turns `LAB_RUNS` into one vitest project
 * per run, each with its own aliases and environment. This script gives each run's spec file its own
 * name filter (a wrong fix runs only the tests that must catch it) and writes what each run did, in the
 * shape of vitest's JSON report, keyed by run name, with where its time went. Each spec file still runs
 * in a fork of its own (`pool: 'forks'`, isolated): one run's module graph, globals and servers are never
 * another's. What is shared is what was the same in every run anyway: vitest's own start, the config,
 * the global set-up that finds the services, and the transform cache.
 */
import { writeFileSync } from 'node:fs';
import { createVitest, type TestCase, type TestModule, type TestSpecification } from 'vitest/node';

/** What one run did: vitest's JSON report for it, and its seconds per step. */
export interface BatchRunReport {
  testResults: {
    message?: string;
    assertionResults: { title: string; fullName: string; status: string; failureMessages: string[] }[];
  }[];
  /** Seconds per step of the run's spec file: fork and environment, imports, set-up, tests. */
  steps: Record<string, number>;
}

/** A test's describe blocks and title, joined as vitest's JSON reporter joins them (`fullName`). */
function fullNameOf(test: TestCase): string {
  const names = [test.name];
  for (let parent = test.parent; parent.type === 'suite'; parent = parent.parent) names.unshift(parent.name);
  return names.join(' ');
}

const seconds = (ms: number | undefined) => Math.round((ms ?? 0) / 100) / 10;

/** One spec file's outcome in the JSON reporter's shape, with where its time went. */
function reportOf(module: TestModule): BatchRunReport['testResults'][number] & { steps: Record<string, number> } {
  const d = module.diagnostic();
  return {
    message: module.errors()[0]?.message ?? '',
    assertionResults: [...module.children.allTests()].map((test) => {
      const result = test.result();
      return {
        title: test.name,
        fullName: fullNameOf(test),
        status: result.state,
        failureMessages: result.errors?.map((e) => e.stack || e.message) ?? [],
      };
    }),
    steps: {
      environment: seconds(d.environmentSetupDuration),
      prepare: seconds(d.prepareDuration),
      imports: seconds(d.collectDuration),
      setup: seconds(d.setupDuration),
      tests: seconds(d.duration),
    },
  };
}

/** Keeps the runs in the order `lab check` gave them (the longest first), instead of vitest's own. */
class InTheOrderGiven {
  sort = async (specs: TestSpecification[]) => specs;
  shard = async (specs: TestSpecification[]) => specs;
}

/** The key of a report that says the lab's config made no projects of the runs. */
const UNSUPPORTED = '(no projects)';

const [reportFile] = process.argv.slice(2);
const filters = JSON.parse(process.env.LAB_RUN_FILTERS ?? '{}') as Record<string, string>;
const order = (JSON.parse(process.env.LAB_RUNS ?? '[]') as { name: string }[]).map((run) => run.name);
const concurrency = Math.max(1, Number(process.env.LABS_SPEC_CONCURRENCY) || 1);

const vitest = await createVitest({
  root: process.cwd(),
  watch: false,
  reporters: [],
  maxWorkers: concurrency,
  sequence: { sequencer: InTheOrderGiven },
});
const reports: Record<string, BatchRunReport> = {};
try {
  // A lab whose vitest config does not make the runs' projects (a config of its own that ignores
  // LAB_RUNS) cannot be batched: say so, and `lab check` runs its spec one process per run instead.
  const projects = new Set(vitest.projects.map((project) => project.name));
  if (!order.every((name) => projects.has(name))) {
    writeFileSync(reportFile!, JSON.stringify({ [UNSUPPORTED]: true }));
    await vitest.close();
    process.exit(0);
  }
  const found = await vitest.globTestSpecifications();
  const specs = found
    .map((spec) => {
      const pattern = filters[spec.project.name];
      return pattern === undefined
        ? spec
        : spec.project.createSpecification(spec.moduleId, { testNamePattern: new RegExp(pattern) });
    })
    .sort((a, b) => order.indexOf(a.project.name) - order.indexOf(b.project.name));
  const { testModules } = await vitest.runTestSpecifications(specs, false);
  for (const module of testModules) {
    const { steps, ...result } = reportOf(module);
    const report = reports[module.project.name] ?? { testResults: [], steps: {} };
    reports[module.project.name] = report;
    report.testResults.push(result);
    for (const [step, s] of Object.entries(steps)) report.steps[step] = (report.steps[step] ?? 0) + s;
  }
} finally {
  writeFileSync(reportFile!, JSON.stringify(reports));
  await vitest.close();
}
process.exit(0);
