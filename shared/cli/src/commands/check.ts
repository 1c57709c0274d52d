/**
 * `lab check` (run by turbo in each lab folder): the compiler, the spec against the starter, the
 * solution and each wrong fix, then the contract. Prints one line, writes .lab/check.json for `lab
 * test` to summarise.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type LabPackage, readLabPackage } from '@labs/test-kit';
import { type ContractResult, checkContract, notVerified } from '../contract.ts';
import { runSpec } from '../run-spec.ts';
import { findLabServices, needsLine, releaseServices } from '../services.ts';
import { typecheck } from '../typecheck.ts';
import { listWrongFixes, runWrongFix } from '../wrong-fixes.ts';
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
 * Every spec run of one check shares the services found here, once: a Kafka or PostgreSQL that the
 * binary step starts is started once per lab, not once per run (the starter, the solution and each
 * wrong fix), and a service that cannot be had is one line, not a failed run each.
 */
async function verify(lab: LabPackage): Promise<ContractResult> {
  const seconds: Record<string, number> = {};
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
    // The compiler runs beside the first spec run: it needs one core for about a second.
    const [typeErrors, starter] = await Promise.all([typecheck(lab.dir), runSpec(lab, 'starter', { env })]);
    lap('starter and tsc');
    const solution = await runSpec(lab, 'solution', { env });
    lap('solution');
    const wrongFixes = [];
    for (const fix of listWrongFixes(lab)) wrongFixes.push({ fix, run: await runWrongFix(lab, fix, { env }) });
    lap('wrong fixes');
    return { ...checkContract(lab, starter, solution, typeErrors, wrongFixes), seconds };
  } finally {
    await releaseServices();
  }
}
