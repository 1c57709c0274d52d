/**
 * `lab check` (run by turbo in each lab folder): the compiler, the spec against the starter, the
 * solution and each wrong fix, then the contract. Prints one line, writes .lab/check.json for `lab
 * test` to summarise.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type LabPackage, readLabPackage } from '@labs/lab-kit/manifest';
import { type ContractResult, checkContract, notVerified } from '../contract.ts';
import { type BatchRun, runSpec, runSpecBatch, type SpecRun } from '../run-spec.ts';
import { findLabServices, needsLine, releaseServices } from '../services.ts';
import { takeSlot } from '../slots.ts';
import { typecheck } from '../typecheck.ts';
import { catchingTests, listWrongFixes, materialize, notApplied, runWrongFix, type WrongFix } from '../wrong-fixes.ts';
import { c, say } from '../ui.ts';

export async function check(dir = process.cwd()): Promise<number> {
  const lab = readLabPackage(dir);
  const result = await verify(lab);
  mkdirSync(join(dir, '.lab'), { recursive: true });
  writeFileSync(join(dir, '.lab', 'check.json'), `${JSON.stringify(result, null, 2)}\n`);
  if (result.unverified) {
    say(`${c.yellow('-')} ${lab.slug}: not verified: ${result.unverified}`);
    return 1;
  }
  if (result.ok) {
    const note = result.starterChanged ? ' (starter changed by the learner: not held to the contract)' : '';
    say(
      `${c.green('✓')} ${lab.slug}: solution ${result.tests}/${result.tests} pass; starter fails all ${result.challenges} challenges; ${result.wrongFixes} wrong fixes caught${note}`,
    );
    for (const n of result.notes ?? []) say(`    ${c.yellow(n)}`);
    return 0;
  }
  say(`${c.red('✗')} ${lab.slug}: the contract is broken`);
  for (const p of result.problems) say(`    ${p}`);
  return 1;
}

/**
 * Spec runs of one lab at a time: `LABS_SPEC_CONCURRENCY`, default 1. A spec run spends most of its
 * time waiting (a server starting, a fault test's bounded stall, a consumer group settling): measured,
 * its CPU is a sixth to a third of its wall time, so two at once gets much of that waiting back (a
 * fresh clone's first `./lab test` took 391-455 s at 2, about 520 s at 1). But at 2, with three checks
 * at once on two cores, one of three whole runs failed a solution's test whose bound is one Redis or
 * Kafka answer (jwt-refresh-tokens, event-streaming): a learner's run must not fail for the machine's
 * sake, so 2 is for a quiet machine with cores to spare (`LABS_SPEC_CONCURRENCY=2`). Not three: on a
 * busy machine (load 20) rate-limiter's fault test missed its bound. Each run has its own key prefixes, databases, queues and topics (the kit's uniqueId),
 * so runs of one lab share no state.
 */
const SPEC_CONCURRENCY = Math.max(1, Number(process.env.LABS_SPEC_CONCURRENCY) || 1);

/**
 * Runs `jobs` at most `limit` at a time, starting them in the order given (the longest known first, so
 * the last to start is a short one), and resolves with their results in that order.
 */
export async function inPool<T>(jobs: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const index = next++;
      results[index] = await jobs[index]!();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
  return results;
}

/**
 * A check's spec runs go through one vitest process (`runSpecBatch`): measured on rate-limiter at load
 * 17 to 24, five filtered runs took 12 s of CPU (user and sys) in one process against 21 s in five, the
 * same verdicts, and half the wall time; vitest's own start, the config and the global set-up are paid
 * once instead of once per run. `LABS_SPEC_BATCH=0` starts a vitest process per run as before (to
 * compare, or to rule the batch out when a run misbehaves); a lab whose vitest config is not the test
 * kit's gets that anyway.
 */
const BATCH = process.env.LABS_SPEC_BATCH !== '0';

/**
 * The starter, the solution and each wrong fix (in that order, the fixes as given) as one batch: the
 * patched fixes are written out first and removed after. Each run's seconds (its spec file's, from fork
 * to last test) go in `runSeconds`, and the sum of every run's seconds per step (environment, prepare,
 * imports, setup, tests) in `runSteps`.
 */
async function inOneProcess(
  lab: LabPackage,
  fixes: WrongFix[],
  env: NodeJS.ProcessEnv,
  runSeconds: Record<string, number>,
  runSteps: Record<string, number>,
): Promise<SpecRun[] | undefined> {
  const written = fixes.map((fix) => ({ fix, file: materialize(lab, fix) }));
  try {
    const runs: BatchRun[] = [
      { name: 'starter', target: 'starter' },
      { name: 'solution', target: 'solution' },
      ...written.flatMap(({ fix, file }) =>
        file ? [{ name: fix.file, target: 'starter' as const, wrongFix: file.path, pattern: catchingTests(fix) }] : [],
      ),
    ];
    const done = await runSpecBatch(lab, runs, { env });
    if (!done) return undefined;
    for (const [name, run] of done) {
      const steps = run.steps ?? {};
      runSeconds[name] = Math.round(Object.values(steps).reduce((a, b) => a + b, 0) * 10) / 10;
      for (const [step, s] of Object.entries(steps)) runSteps[step] = Math.round(((runSteps[step] ?? 0) + s) * 10) / 10;
    }
    const outcome = (name: string): SpecRun => {
      const { steps: _, ...run } = done.get(name)!;
      return run;
    };
    return [
      outcome('starter'),
      outcome('solution'),
      ...written.map(({ fix, file }) => (file ? outcome(fix.file) : notApplied)),
    ];
  } finally {
    for (const { file } of written) file?.remove();
  }
}

/** A spec run's seconds from start to end. */
async function timed<T>(seconds: Record<string, number>, name: string, run: () => Promise<T>): Promise<T> {
  const start = performance.now();
  try {
    return await run();
  } finally {
    seconds[name] = Math.round((performance.now() - start) / 100) / 10;
  }
}

/** The seconds each run took in the lab's last check (.lab/check.json), to start the longest first. */
function lastRunSeconds(lab: LabPackage): Record<string, number> {
  try {
    const last = JSON.parse(readFileSync(join(lab.dir, '.lab', 'check.json'), 'utf8')) as ContractResult;
    return last.runSeconds ?? {};
  } catch {
    return {};
  }
}

/**
 * Every spec run of one check shares the services found here, once: a Kafka or PostgreSQL that the
 * binary step starts is started once per lab, not once per run (the starter, the solution and each
 * wrong fix), and a service that cannot be had is one line, not a failed run each. The runs themselves
 * go through one pool ({@link SPEC_CONCURRENCY} at a time), the starter and the solution first (they run
 * every test), then the wrong fixes, the longest last time first.
 */
async function verify(lab: LabPackage): Promise<ContractResult> {
  // Under `./lab test`, the longest checks start first (slots.ts); the wait is not this lab's time.
  await takeSlot(lab.name);
  const seconds: Record<string, number> = {};
  const runSeconds: Record<string, number> = {};
  let since = performance.now();
  /** Seconds since the last step ended, kept under `step` (for the plan in CONTRIBUTING.md). */
  const lap = (step: string) => {
    const now = performance.now();
    seconds[step] = Math.round((now - since) / 100) / 10;
    since = now;
  };
  const services = await findLabServices(lab, { embeddedPerTestFile: true, log: () => {} });
  lap('services');
  if ('missing' in services) return notVerified(lab, needsLine(services.missing));
  try {
    const { env } = services;
    const last = lastRunSeconds(lab);
    // On the embedded engine (one session at a time), a wrong fix whose catching test needs a session of
    // its own beside the API's is not judged: it is named in a note instead.
    const embedded = /\bpostgres:embedded\b/.test(env.LABS_PROVIDER ?? '');
    const all = listWrongFixes(lab);
    const notHere = embedded ? all.filter((fix) => fix.serverOnly) : [];
    const fixes = all.filter((fix) => !notHere.includes(fix)).sort((a, b) => (last[b.file] ?? 0) - (last[a.file] ?? 0));
    // The compiler runs beside the spec runs: it needs one core for about a second.
    const typeErrors = typecheck(lab.dir);
    const runSteps: Record<string, number> = {};
    const batched = BATCH ? await inOneProcess(lab, fixes, env, runSeconds, runSteps) : undefined;
    const [starter, solution, ...fixRuns] =
      batched ??
      (await inPool<SpecRun>(
        [
          () => timed(runSeconds, 'starter', () => runSpec(lab, 'starter', { env })),
          () => timed(runSeconds, 'solution', () => runSpec(lab, 'solution', { env })),
          ...fixes.map((fix) => () => timed(runSeconds, fix.file, () => runWrongFix(lab, fix, { env }))),
        ],
        SPEC_CONCURRENCY,
      ));
    const wrongFixes = fixes.map((fix, i) => ({ fix, run: fixRuns[i]! }));
    lap('spec runs');
    const result = checkContract(lab, starter!, solution!, await typeErrors, wrongFixes);
    if (notHere.length > 0)
      result.notes = [
        ...(result.notes ?? []),
        ...notHere.map((fix) => `${fix.file} not run on the embedded engine: ${fix.serverOnly}`),
      ];
    return {
      ...result,
      seconds,
      runSeconds,
      ...(batched ? { runSteps } : {}),
      concurrency: SPEC_CONCURRENCY,
    };
  } finally {
    await releaseServices();
  }
}
