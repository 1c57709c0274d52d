/**
 * Load script: the starter and the solution, each as three worker processes in one consumer group on
 * a six-partition topic, fed by the target's own publisher. Two phases per target:
 *
 * 1. Throughput: a backlog of BACKLOG events published as fast as the publisher goes (producer
 *    events/s), and the time until the three workers have applied all of it (consumer events/s).
 * 2. Steady traffic at RATE events/s for BENCH_DURATION_SEC seconds; halfway through, one of the three
 *    workers is stopped with SIGTERM, as a deploy or a scale-in does. Measured: the end-to-end lag
 *    (event created -> balance changed) p50/p99, the longest any partition then went without an event
 *    applied (the pause), and, once the survivors have caught up, events lost, applied twice and
 *    applied out of order.
 *
 * No autocannon here: the load is Kafka traffic from the lab's own client. The table has the bench
 * kit's EVENTS columns: events applied per second (the backlog, consumed), the end-to-end lag p50/p99
 * (steady traffic), and events not applied (lost); then events published per second.
 */
import { join } from 'node:path';
import type pg from 'pg';
import { benchDurationSec, createReport, EVENTS, starterFiles, type TableRow } from '@labs/bench';
import { uniqueId } from '@labs/lab-kit';
import {
  childServiceEnv,
  createPgPool,
  dropDatabase,
  ensureDatabase,
  resolveService,
  stopServices,
} from '@labs/services';
import { eventStream } from '../server/events.ts';
import { brokerList, caughtUp, createKafka, ensureTopics } from '../server/kafka.ts';
import type { EventPipeline } from '../server/pipeline.ts';
import { migrate, projectionStats, requirePostgresServer } from '../server/projection.ts';
import { startWorker, type WorkerProcess } from '../server/worker-process.ts';

// kafkajs 2.2.4 sets a timer Node 24 finds negative: a warning about the client, not about the lab.
process.removeAllListeners('warning');
process.on('warning', (warning) => {
  if (warning.name !== 'TimeoutNegativeWarning') console.warn(`${warning.name}: ${warning.message}`);
});

const DURATION_SEC = benchDurationSec(6);
const RATE = 500;
const BACKLOG = 6000;
const WORKERS = 3;
const PARTITIONS = 6;
const ACCOUNTS = 50;
const LAB_DIR = join(import.meta.dirname, '..');
// The committed starter, and the learner's src/ beside it as "your code" when they have edited it: the
// workers load their file by path, so the committed copy stays on disk until the run ends.
await using starters = await starterFiles(new URL('../src/event-pipeline.ts', import.meta.url));
/** Each target's pipeline module, by row name: starter (your code), solution. */
const TARGETS: Record<string, string> = {
  ...Object.fromEntries(starters.versions.map(({ name, path }) => [name, path])),
  solution: join(LAB_DIR, 'solution', 'event-pipeline.ts'),
};

console.log(
  `Event streaming load test: ${WORKERS} workers per target on ${PARTITIONS} partitions; a backlog of ${BACKLOG} events, ` +
    `then ${RATE} events/s for ${DURATION_SEC} s with one worker stopped (SIGTERM) halfway.`,
);
const kafkaService = await resolveService('kafka');
const postgresService = await resolveService('postgres');
requirePostgresServer(postgresService.provider);
const databaseName = `labs_event_streaming_bench_${uniqueId()}`;
const databaseUrl = await ensureDatabase(postgresService.url, databaseName);
const pool = createPgPool(databaseUrl);
await migrate(pool);
const kafka = createKafka(brokerList(kafkaService.url), 'event-streaming-bench');
const admin = kafka.admin();
await admin.connect();
const topics: string[] = [];

/** Resolves once `check` holds, or after `timeoutMs` (false). */
async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return true;
}

const seconds = (ms: number) => ms / 1000;

/** One target's run: its figures, and its row in the table. */
async function measure(name: string, pipelineModule: string): Promise<TableRow> {
  process.stderr.write(`  ${name.padEnd(10)} `);
  const pipeline = (await import(pipelineModule)) as EventPipeline;
  // A topic's name and the accounts' ids say whose they are, in letters Kafka accepts ("your code": your-code).
  const slug = name.replace(/\W+/g, '-');
  const topic = `labs-event-streaming-bench-${slug}-${uniqueId()}`;
  const deadLetterTopic = `${topic}-dlt`;
  const groupId = `${topic}-projector`;
  topics.push(topic, deadLetterTopic);
  await ensureTopics(admin, [topic, deadLetterTopic], PARTITIONS);
  const prefix = `${slug}-`;
  const take = eventStream(Array.from({ length: ACCOUNTS }, (_, i) => `${prefix}acct-${i + 1}`));
  const stats = () => projectionStats(pool, prefix);

  const workers: WorkerProcess[] = [];
  const publisher = await pipeline.createPublisher(kafka, topic);
  try {
    for (let i = 0; i < WORKERS; i++) {
      workers.push(
        await startWorker({
          pipelineModule,
          databaseUrl,
          topic,
          deadLetterTopic,
          groupId,
          env: childServiceEnv([kafkaService, postgresService]),
        }),
      );
    }
    await until(async () => {
      const { groups } = await admin.describeGroups([groupId]);
      return groups[0]?.state === 'Stable' && groups[0].members.length === WORKERS;
    }, 30_000);

    // 1. Throughput: the backlog, as fast as it goes.
    const backlogStart = Date.now();
    for (let sent = 0; sent < BACKLOG; sent += 500) await publisher.publish(take(500));
    const publishMs = Date.now() - backlogStart;
    await until(async () => (await stats()).distinctEvents >= BACKLOG, 60_000);
    const consumeMs = (await lastAppliedAt(pool, prefix)) - backlogStart;
    process.stderr.write('backlog applied, ');

    // 2. Steady traffic, one worker stopped halfway.
    const steadyStart = Date.now();
    const perTick = RATE / 20;
    let produced = BACKLOG;
    let stoppedAt = 0;
    let stopped: Promise<unknown> | undefined;
    for (let tick = 0; Date.now() - steadyStart < DURATION_SEC * 1000; tick++) {
      await publisher.publish(take(perTick));
      produced += perTick;
      if (!stopped && Date.now() - steadyStart >= (DURATION_SEC * 1000) / 2) {
        stoppedAt = Date.now();
        stopped = workers[0]!.kill('SIGTERM');
      }
      const due = steadyStart + (tick + 1) * 50;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - Date.now())));
    }
    await stopped;
    // The survivors take over the stopped worker's partitions and read to the end.
    await until(() => caughtUp(admin, groupId, topic), 60_000);
    await Promise.all(workers.slice(1).map((w) => w.stop()));
    process.stderr.write('done\n');

    const final = await stats();
    const lag = await lagPercentiles(pool, prefix, steadyStart);
    const lost = produced - final.distinctEvents;
    return EVENTS.row(
      name,
      { perSec: BACKLOG / seconds(consumeMs), p50Ms: lag.p50, p99Ms: lag.p99, failed: lost },
      {
        'published events/s': BACKLOG / seconds(publishMs),
        pause: Math.round(await longestPause(pool, prefix, steadyStart, stoppedAt)),
        duplicates: final.duplicates,
        'out of order': final.outOfOrder,
      },
    );
  } finally {
    await publisher.close();
    await Promise.all(workers.map((w) => w.kill('SIGKILL')));
  }
}

/** When the last event of `prefix`'s accounts was applied (epoch ms). */
async function lastAppliedAt(db: pg.Pool, prefix: string): Promise<number> {
  const { rows } = await db.query<{ at: number }>(
    `SELECT extract(epoch FROM max(applied_at)) * 1000 AS at FROM account_entries WHERE starts_with(account_id, $1)`,
    [prefix],
  );
  return Number(rows[0]!.at);
}

/** p50 and p99 of (first applied - created), in ms, for the events created since `since` (epoch ms). */
async function lagPercentiles(db: pg.Pool, prefix: string, since: number): Promise<{ p50: number; p99: number }> {
  const { rows } = await db.query<{ p50: number; p99: number }>(
    `SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) AS p50,
            percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) AS p99
       FROM (SELECT extract(epoch FROM min(applied_at) - min(happened_at)) * 1000 AS lag_ms
               FROM account_entries
              WHERE starts_with(account_id, $1) AND happened_at >= to_timestamp($2 / 1000.0)
              GROUP BY event_id) AS lags`,
    [prefix, since],
  );
  return { p50: Number(rows[0]?.p50 ?? 0), p99: Number(rows[0]?.p99 ?? 0) };
}

/**
 * The longest time any partition went without an event applied, among the gaps that ended after the
 * stop: how long the stopped worker's partitions (and, while the group rebalanced, everyone's) paused.
 */
async function longestPause(db: pg.Pool, prefix: string, since: number, stoppedAt: number): Promise<number> {
  const { rows } = await db.query<{ pause: number | null }>(
    `SELECT max(gap_ms) AS pause
       FROM (SELECT applied_at,
                    extract(epoch FROM applied_at - lag(applied_at) OVER (
                      PARTITION BY source_partition ORDER BY applied_at)) * 1000 AS gap_ms
               FROM account_entries
              WHERE starts_with(account_id, $1) AND applied_at >= to_timestamp($2 / 1000.0)) AS gaps
      WHERE applied_at > to_timestamp($3 / 1000.0)`,
    [prefix, since, stoppedAt],
  );
  return Number(rows[0]?.pause ?? 0);
}

// Rows say whose code they ran: an edited src/ is "your code", beside the committed starter.
const report = createReport({ lab: 'event-streaming', dir: LAB_DIR, starterBeside: true });
const rows: TableRow[] = [];
try {
  console.log('Measuring:');
  for (const [name, pipelineModule] of Object.entries(TARGETS)) rows.push(await measure(name, pipelineModule));
} finally {
  await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.disconnect();
  await pool.end();
  await dropDatabase(postgresService.url, databaseName).catch(() => undefined);
  await stopServices();
}

report.table('Event streaming: three workers, one stopped with SIGTERM halfway', {
  columns: [
    ...EVENTS.columns,
    { name: 'published events/s', unit: 'events/s', kind: 'rate' },
    { name: 'pause', unit: 'ms' },
    { name: 'duplicates' },
    { name: 'out of order' },
  ],
  rows,
});
console.log(
  'events/s: the backlog applied per second; published events/s: the backlog published per second. applied p50/p99 ms:\n' +
    `end-to-end lag, event created -> balance changed (steady ${RATE} events/s, including the stop). pause ms: the longest\n` +
    'a partition went without an event applied after the stop. not applied: events lost.',
);
const solution = rows.find((r) => r.name === 'solution')?.values;
const starter = rows.find((r) => r.name === 'starter')?.values;
if (solution && starter) {
  report.target('events the solution lost', Number(solution['not applied']), { exactly: 0 });
  report.target('events the solution applied twice', Number(solution.duplicates), { exactly: 0 });
  report.target('events the solution applied out of order', Number(solution['out of order']), { exactly: 0 });
  report.target(
    "solution's pause ÷ starter's pause when a worker stops",
    Number(solution.pause) / Math.max(Number(starter.pause), 1),
    { atMost: 1 },
    'x',
  );
}
const file = report.write({
  durationSec: DURATION_SEC,
  rate: RATE,
  backlog: BACKLOG,
  workers: WORKERS,
  partitions: PARTITIONS,
});
console.log(`Figures written to ${file}`);
