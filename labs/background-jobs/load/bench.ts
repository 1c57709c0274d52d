/**
 * Load script: jobs published by the lab's own client (no HTTP in the way), done by workers running in
 * child processes (server/worker-process.ts), counted in PostgreSQL. Three runs, three tables:
 *
 * 1. Crash at halfway: BENCH_JOBS (default 10,000) jobs of 2 ms each wait in the queue; worker A takes
 *    them, is killed with SIGKILL once half are confirmed, and worker B finishes. Starter vs solution:
 *    jobs lost, duplicate confirmations, jobs/s.
 * 2. Prefetch sweep (the solution): one worker with prefetch 1, 10, 30 and 50 against a backlog, for
 *    BENCH_DURATION_SEC (default 5) seconds each: jobs/s and how many jobs were in progress at once.
 *    Each job in progress holds a database connection, so the worker's pool grows with the prefetch
 *    (at least its usual 10): with a pool of 10 every row past 10 measured the pool, not prefetch.
 *    50 is the top because PostgreSQL's default max_connections (100) is shared with everything else.
 * 3. A poison job (always fails) alone in the queue for BENCH_DURATION_SEC seconds: how often each
 *    version tries it, and whether it ends in the dead-letter queue.
 *
 * The tables say what they count: jobs/s, and milliseconds from publish to confirmation (the bench
 * kit's JOBS columns), attempts/s for the poison job.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import {
  benchDurationSec,
  createReport,
  JOBS as JOB_COLUMNS,
  starterFiles,
  type TableRow,
  type Value,
} from '@labs/bench';
import { openLab } from '@labs/lab-kit';
import { resolveService, stopServices } from '@labs/services';
import backgroundJobsLab from '../server/lab.ts';
import { openBrokerAdmin } from '../server/broker.ts';
import { migrate } from '../server/confirmations.ts';
import { type JobQueueModule, type JobQueueNames, jobQueueNames, newJob } from '../server/jobs.ts';
import { forkWorker, type WorkerChild } from '../server/worker-child.ts';

const DURATION_SEC = benchDurationSec(5);
const JOBS = Number(process.env.BENCH_JOBS ?? 10_000);
if (!Number.isInteger(JOBS) || JOBS < 100 || JOBS > 1_000_000) {
  console.error(`BENCH_JOBS must be a whole number from 100 to 1000000, got "${process.env.BENCH_JOBS}".`);
  process.exit(2);
}
const WORK_MS = 2;
/** The solution's prefetch in the crash run: the lab's default (JOB_PREFETCH), chosen from the sweep. */
const PREFETCH = 30;
const SWEEP = [1, 10, 30, 50];
/** Shorter than the lab's default (500/2000/8000), so the poison job is dead-lettered within the run. */
const RETRY_DELAYS = [100, 400, 1600];
// The committed starter, and the learner's src/ beside it as "your code" when they have edited it: the
// workers load their file by path, so the committed copy stays on disk until the run ends.
await using starters = await starterFiles(new URL('../src/job-queue.ts', import.meta.url));
/** Each target's job-queue module, by row name: starter (your code), solution. */
const TARGETS: Record<string, string> = {
  ...Object.fromEntries(starters.versions.map(({ name, path }) => [name, path])),
  solution: fileURLToPath(new URL('../solution/job-queue.ts', import.meta.url)),
};
type Target = string;
/** The file of `target`'s job-queue module. */
function moduleOf(target: Target): string {
  const file = TARGETS[target];
  if (!file) throw new Error(`no job-queue module is measured as "${target}"`);
  return file;
}
/** The crash and poison runs' targets, in the tables' order. */
const COMPARED = Object.keys(TARGETS);

// Rows say whose code they ran: an edited src/ is "your code", beside the committed starter.
const report = createReport({ lab: 'background-jobs', dir: join(import.meta.dirname, '..'), starterBeside: true });
const lab = await openLab(backgroundJobsLab, { purpose: 'bench' });
const db = await lab.context.database();
await migrate(db);
const databaseUrl = db.options.connectionString as string;
const { url } = await resolveService('rabbitmq');
const admin = await openBrokerAdmin(url);
const children = new Set<WorkerChild>();
const silent = () => {};

let runs = 0;
/** A run of its own: fresh queues (declared by the target's own publisher), deleted afterwards. */
async function inFreshQueues<T>(target: Target, work: (names: JobQueueNames, email: string) => Promise<T>): Promise<T> {
  const run = ++runs;
  const names = jobQueueNames((part) => `${lab.context.prefix}${run}.${part}`, RETRY_DELAYS);
  const implementation = (await import(moduleOf(target))) as JobQueueModule;
  const publisher = await implementation.createPublisher({
    url,
    names,
    prefetch: PREFETCH,
    retryDelaysMs: RETRY_DELAYS,
    publishTimeoutMs: 5000,
    log: silent,
  });
  await publisher.close();
  try {
    return await work(names, `bench-${run}@example.com`);
  } finally {
    for (const child of children) await child.kill();
    children.clear();
    await admin.deleteJobQueue(names);
  }
}

async function startWorker(
  target: Target,
  names: JobQueueNames,
  prefetch: number,
  poolSize?: number,
): Promise<WorkerChild> {
  const child = await forkWorker({
    settings: { url, names, prefetch, retryDelaysMs: RETRY_DELAYS, publishTimeoutMs: 5000 },
    databaseUrl,
    workMs: WORK_MS,
    module: moduleOf(target),
    ...(poolSize === undefined ? {} : { poolSize }),
  });
  children.add(child);
  return child;
}

/** What one run confirmed, read back from the table: rows, distinct jobs, latency, last confirmation. */
async function confirmed(email: string) {
  const { rows } = await db.query<{ rows: number; jobs: number; p50: number; p99: number; last: Date | null }>(
    `SELECT count(*)::int AS rows, count(DISTINCT job_id)::int AS jobs,
            coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), 0)::float AS p50,
            coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), 0)::float AS p99,
            max(sent_at) AS last
       FROM (SELECT job_id, sent_at, extract(epoch FROM sent_at - enqueued_at) * 1000 AS ms
               FROM confirmations WHERE email = $1) AS run`,
    [email],
  );
  return rows[0]!;
}

/** Jobs confirmed so far in a run: a cheap count, for polling while workers run (the figures come after). */
async function confirmedSoFar(email: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM confirmations WHERE email = $1', [
    email,
  ]);
  return rows[0]?.n ?? 0;
}

/** Polls until `done()` or nothing changed for `quietMs`; returns whether done. */
async function until(read: () => Promise<number>, done: (n: number) => boolean, quietMs = 3000): Promise<boolean> {
  let last = -1;
  let changedAt = performance.now();
  for (;;) {
    const n = await read();
    if (done(n)) return true;
    if (n !== last) {
      last = n;
      changedAt = performance.now();
    } else if (performance.now() - changedAt > quietMs) {
      return false;
    }
    await sleep(100);
  }
}

/** A row of the JOBS columns from job figures: jobs/s, ms from publish to confirmation, jobs lost. */
function jobRow(
  name: string,
  figures: { perSec: number; p50?: number; p99?: number; lost?: number },
  evidence: Record<string, Value>,
): TableRow {
  const { perSec, p50 = 0, p99 = 0, lost = 0 } = figures;
  return JOB_COLUMNS.row(name, { perSec, p50Ms: p50, p99Ms: p99, failed: lost }, evidence);
}

async function crashRun(target: Target): Promise<TableRow> {
  return inFreshQueues(target, async (names, email) => {
    const jobs = Array.from({ length: JOBS }, () => newJob({ email, items: [{ sku: 'mug', quantity: 1 }] }));
    await admin.publishJobs(names, jobs);
    process.stderr.write(`  ${target.padEnd(10)} ${JOBS} jobs queued; worker A `);
    const a = await startWorker(target, names, PREFETCH);
    const started = Date.now();
    await until(
      () => confirmedSoFar(email),
      (n) => n >= JOBS / 2,
    );
    await a.kill();
    const atKill = (await confirmed(email)).jobs;
    process.stderr.write(`killed at ${atKill} confirmed; worker B `);
    await until(
      async () => (await admin.queueState(names.queue))?.consumers ?? 0,
      (n) => n === 0,
    );
    await startWorker(target, names, PREFETCH);
    await until(
      () => confirmedSoFar(email),
      (n) => n >= JOBS,
    );
    const end = await confirmed(email);
    const seconds = ((end.last?.getTime() ?? Date.now()) - started) / 1000;
    process.stderr.write(`finished: ${end.jobs} confirmed\n`);
    const lost = JOBS - end.jobs;
    return jobRow(
      target,
      { perSec: end.jobs / seconds, p50: end.p50, p99: end.p99, lost },
      { jobs: JOBS, 'killed at': atKill, confirmed: end.jobs, lost, duplicates: end.rows - end.jobs },
    );
  });
}

async function sweepRun(prefetch: number): Promise<TableRow> {
  return inFreshQueues('solution', async (names, email) => {
    // More than one worker can do in the window, so it never runs dry.
    const backlog = Math.min(200_000, DURATION_SEC * 4000);
    await admin.publishJobs(
      names,
      Array.from({ length: backlog }, () => newJob({ email, items: [{ sku: 'mug', quantity: 1 }] })),
    );
    process.stderr.write(`  prefetch ${String(prefetch).padEnd(4)} `);
    // A connection for every job prefetch lets in: the pool must not be what caps the row.
    const worker = await startWorker('solution', names, prefetch, Math.max(10, prefetch));
    const before = await confirmedSoFar(email);
    const started = performance.now();
    await sleep(DURATION_SEC * 1000);
    const after = await confirmed(email);
    const seconds = (performance.now() - started) / 1000;
    const { maxInFlight } = await worker.stats();
    const perSec = (after.jobs - before) / seconds;
    process.stderr.write(`${Math.round(perSec)} jobs/s\n`);
    return jobRow(
      `prefetch ${prefetch}`,
      { perSec, p50: after.p50, p99: after.p99 },
      { 'most in progress': maxInFlight, 'pool size': Math.max(10, prefetch), backlog },
    );
  });
}

async function poisonRun(target: Target): Promise<TableRow> {
  return inFreshQueues(target, async (names, email) => {
    await admin.publishJobs(names, [newJob({ email, items: [{ sku: 'gone', quantity: 1 }] })]);
    process.stderr.write(`  ${target.padEnd(10)} `);
    const worker = await startWorker(target, names, PREFETCH);
    const started = performance.now();
    await sleep(DURATION_SEC * 1000);
    const seconds = (performance.now() - started) / 1000;
    const { calls } = await worker.stats();
    const dead = (await admin.queueState(names.deadQueue))?.messages ?? 0;
    process.stderr.write(`${calls} attempts\n`);
    return { name: target, values: { 'attempts/s': calls / seconds, attempts: calls, 'dead-lettered': dead } };
  });
}

try {
  console.log(
    `Background jobs load test: ${JOBS} jobs of ${WORK_MS} ms, workers in child processes, ${DURATION_SEC} s per sweep step.`,
  );
  console.log('Crash at halfway:');
  const crash: TableRow[] = [];
  for (const target of COMPARED) crash.push(await crashRun(target));
  console.log('Prefetch sweep (solution, one worker, a database connection for every job prefetch lets in):');
  const sweep: TableRow[] = [];
  for (const prefetch of SWEEP) sweep.push(await sweepRun(prefetch));
  console.log(`Poison job (retry delays ${RETRY_DELAYS.join('/')} ms):`);
  const poison: TableRow[] = [];
  for (const target of COMPARED) poison.push(await poisonRun(target));

  report.table(`Crash at halfway: ${JOBS} jobs, worker A killed (SIGKILL) at half, worker B finishes`, {
    columns: [
      ...JOB_COLUMNS.columns,
      { name: 'jobs' },
      { name: 'killed at' },
      { name: 'confirmed' },
      { name: 'lost' },
      { name: 'duplicates' },
    ],
    rows: crash,
    lesson: 'lost',
  });
  report.table(`Prefetch sweep: one solution worker, ${DURATION_SEC} s each against a backlog`, {
    columns: [...JOB_COLUMNS.columns, { name: 'most in progress' }, { name: 'pool size' }, { name: 'backlog' }],
    rows: sweep,
    lesson: 'most in progress',
  });
  report.table(`Poison job: one job that always fails, ${DURATION_SEC} s`, {
    columns: [
      { name: 'attempts/s', unit: 'attempts/s', kind: 'rate', better: 'less' },
      { name: 'attempts' },
      { name: 'dead-lettered' },
    ],
    rows: poison,
    lesson: 'attempts',
  });

  const solution = crash.find((row) => row.name === 'solution');
  report.target('jobs the solution lost when its worker was killed', Number(solution?.values.lost), { exactly: 0 });
  report.target('duplicate confirmations the solution sent after the crash', Number(solution?.values.duplicates), {
    exactly: 0,
  });
  report.target(
    `times the solution tried the poison job in ${DURATION_SEC} s`,
    Number(poison.find((row) => row.name === 'solution')?.values.attempts),
    {
      atMost: RETRY_DELAYS.length + 1,
    },
  );
  const file = report.write({
    jobs: JOBS,
    workMs: WORK_MS,
    prefetch: PREFETCH,
    durationSec: DURATION_SEC,
    retryDelaysMs: RETRY_DELAYS,
  });
  console.log(`Figures written to ${file}`);
} finally {
  for (const child of children) await child.kill();
  await admin.close();
  await lab.close();
  await stopServices();
}
