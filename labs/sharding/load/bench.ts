/**
 * Load script. Two worlds of four shards, each seeded with 100,000 notes (2,000 tenants x 50): one
 * routed by the starter (hash % N), one by the solution (buckets). Each is driven with alternating
 * writes and reads over its tenants before, during and after a fifth shard is added, and the table
 * shows what the reshard cost (p99 of reads and writes, measured in the server), what it moved (rows,
 * and the share of 100,000 keys whose shard changed), how even the shards are afterwards, how long
 * writes to a bucket were paused, and how many acknowledged writes can no longer be found.
 *
 * Then a Zipf workload (1,000 tenants, s = 1.1: a few tenants get most of the traffic) on the
 * solution's five shards: the busiest shard's share of the statements, before and after its three
 * hottest tenants are split over 8 buckets each.
 */
import { join } from 'node:path';
import {
  benchDurationSec,
  createReport,
  type Distances,
  forkServers,
  HTTP,
  type LoadResult,
  mergeRounds,
  runLoad,
  type TableRow,
  type Value,
  withDistance,
} from '@labs/bench';
import type { BenchServerOptions } from './servers.ts';
import { mixedRequests, seededTenant, zipf } from './workload.ts';

const DURATION_SEC = benchDurationSec(5);
const CONNECTIONS = 16;
const options: BenchServerOptions = { tenants: 2000, notesPerTenant: 50, keys: 100_000, poolSize: 6 };

console.log(
  `Sharding load test: ${options.tenants * options.notesPerTenant} notes (${options.tenants} tenants) on 4 shards per router, ` +
    `${CONNECTIONS} connections, ${DURATION_SEC} s per phase. Seeding takes a little while.`,
);
const report = createReport({ lab: 'sharding', dir: join(import.meta.dirname, '..') });
await using servers = await forkServers(new URL('./servers.ts', import.meta.url), options);
const { control } = servers.urls;

interface Stats {
  readP99Ms: number;
  writeP99Ms: number;
  rowsByShard: number[];
  opsByShard: number[];
  writesLost?: number;
  keysMovedShare?: number;
}
const reset = (world: string) => fetch(`${control}/bench/${world}/reset`, { method: 'POST' });
const stats = async (world: string, full = false): Promise<Stats> =>
  (await fetch(`${control}/bench/${world}/stats${full ? '?full=1' : ''}`)).json() as Promise<Stats>;

const anySeeded = () => seededTenant(Math.floor(Math.random() * options.tenants));
const load = (name: string, url: string, pick: () => string, durationSec = DURATION_SEC) =>
  runLoad({ name, url, durationSec, connections: CONNECTIONS, requests: mixedRequests(pick) });
/**
 * Load in one-second runs until `done` settles, for at least DURATION_SEC: a reshard takes as long
 * as it takes, and "during" must cover all of it. The runs are merged into one result (mergeRounds:
 * counts add up, p50 is the runs' median, p99 the worst run's, an upper bound).
 */
async function loadUntil(name: string, url: string, pick: () => string, done: Promise<unknown>): Promise<LoadResult> {
  let finished = false;
  void done.finally(() => {
    finished = true;
  });
  const runs: LoadResult[] = [];
  let seconds = 0;
  while (!finished || seconds < DURATION_SEC) {
    const run = await load(name, url, pick, 1);
    runs.push(run);
    seconds += run.durationSec;
  }
  return mergeRounds(name, runs);
}
const maxOverMean = (values: number[]) => Math.max(...values) / (values.reduce((a, b) => a + b, 0) / values.length);
const pct = (share: number) => Math.round(share * 1000) / 10;
const round2 = (n: number) => Math.round(n * 100) / 100;

console.log('Warming up:');
for (const world of ['starter', 'solution']) await load(world, servers.urls[world]!, anySeeded, 1);

console.log('Measuring:');
const rows: TableRow[] = [];
const add = (name: string, result: LoadResult, s: Stats, evidence: Record<string, Value>) =>
  rows.push(HTTP.row(name, result, { 'read p99': s.readP99Ms, 'write p99': s.writeP99Ms, ...evidence }));

const reshards: Record<string, { rowsMoved: number; pauseMs: number; durationMs: number }> = {};
for (const world of ['starter', 'solution']) {
  const url = servers.urls[world]!;
  await reset(world);
  const before = await load(`${world}: before`, url, anySeeded);
  const beforeStats = await stats(world);
  add(`${world}: before`, before, beforeStats, { 'max/mean rows': round2(maxOverMean(beforeStats.rowsByShard)) });

  await reset(world);
  const reshardDone = fetch(`${url}/api/admin/shards`, { method: 'POST' }).then(
    (r) => r.json() as Promise<{ rowsMoved: number; pauseMs: number; durationMs: number }>,
  );
  const during = await loadUntil(`${world}: during reshard`, url, anySeeded, reshardDone);
  const reshard = await reshardDone;
  reshards[world] = reshard;
  const duringStats = await stats(world, true);
  add(`${world}: during reshard`, during, duringStats, {
    'rows moved': reshard.rowsMoved,
    'keys moved': pct(duringStats.keysMovedShare ?? 0),
    'switch pause': world === 'starter' ? 'none' : reshard.pauseMs,
    'writes lost': duringStats.writesLost ?? 0,
  });

  await reset(world);
  const after = await load(`${world}: after`, url, anySeeded);
  const afterStats = await stats(world, true);
  add(`${world}: after`, after, afterStats, {
    'max/mean rows': round2(maxOverMean(afterStats.rowsByShard)),
    'writes lost': afterStats.writesLost ?? 0,
  });
}

// Zipf traffic on the solution's (now five) shards, before and after its hottest tenants are split.
const hot = zipf(1000, 1.1, 'z-');
const solutionUrl = servers.urls.solution!;
const shares: number[] = [];
for (const phase of ['zipf: one bucket per tenant', 'zipf: top 3 split x8']) {
  if (shares.length === 1) {
    for (const tenant of hot.top(3)) {
      await fetch(`${solutionUrl}/api/admin/hot-tenants/${tenant}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ fanout: 8 }),
      });
    }
  }
  await reset('solution');
  const result = await load(phase, solutionUrl, hot.pick);
  const s = await stats('solution');
  const share = Math.max(...s.opsByShard) / s.opsByShard.reduce((a, b) => a + b, 0);
  shares.push(share);
  add(phase, result, s, { 'hot shard share': pct(share) });
}

// The solution's shards a network hop away (a smaller world of its own, seeded through the proxy): what a
// request costs in round trips. The proxy counts the messages the servers sent and waited on, so round
// trips per request come from this run's connections alone, whatever else uses the same PostgreSQL.
// The bound is that many round trips at the delay the proxy applied; the solution's share is the bound
// over its p50: near 1, the wire is the request's cost.
const FAR: Distances = { postgres: 1 };
{
  await using far = report.distance(await withDistance(FAR));
  console.log(`\nThe solution with PostgreSQL ${far.label.slice(1, -1)}:`);
  for (const line of far.describe()) console.log(`  ${line}`);
  const small = { ...options, tenants: 200, notesPerTenant: 10, keys: 1000, worlds: ['solution' as const] };
  await using distant = await forkServers(new URL('./servers.ts', import.meta.url), small, { env: far.env });
  const url = distant.urls.solution!;
  const someTenant = () => seededTenant(Math.floor(Math.random() * small.tenants));
  await load('solution (warm-up)', url, someTenant, 1);
  const chunks = async () => (await far.stats()).postgres?.upstream.chunks ?? 0;
  const before = await chunks();
  const result = await load(`solution ${far.label}`, url, someTenant);
  // Requests still in flight when the load stopped finish their round trips too: let them.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const roundTrips = ((await chunks()) - before) / Math.max(1, result.requests);
  await far.applied();
  const appliedMs = far.record?.services.postgres?.appliedMeanDelayMs ?? 0;
  const s = await (await fetch(`${distant.urls.control}/bench/solution/stats`)).json();
  add(`solution ${far.label}`, result, s as Stats, { 'round trips/request': Math.round(roundTrips * 100) / 100 });
  const boundMs = roundTrips * 2 * appliedMs;
  console.log(`  the proxy applied ${appliedMs.toFixed(2)} ms each way on average`);
  report.figure(
    `solution: round trips per request ${far.label} (counted by the proxy)`,
    Math.round(roundTrips * 100) / 100,
  );
  report.figure(`solution: round-trip bound per request ${far.label}`, boundMs, 'ms');
  report.figure(`solution: the bound's share of its p50 ${far.label}`, boundMs / Math.max(result.p50Ms, 1e-9), 'x');
}

report.table('Sharding: hash % N (starter) against buckets (solution), adding a fifth shard to four', {
  columns: [
    ...HTTP.columns,
    { name: 'read p99', unit: 'ms', kind: 'latency' },
    { name: 'write p99', unit: 'ms', kind: 'latency' },
    { name: 'rows moved' },
    { name: 'keys moved', unit: '%' },
    { name: 'max/mean rows' },
    { name: 'switch pause', unit: 'ms' },
    { name: 'writes lost' },
    { name: 'hot shard share', unit: '%' },
    { name: 'round trips/request' },
  ],
  rows,
  lesson: 'rows moved',
});
console.log(
  `Reshard took ${(reshards.starter!.durationMs / 1000).toFixed(1)} s (starter) and ${(reshards.solution!.durationMs / 1000).toFixed(1)} s (solution); ` +
    `each "during" row is the load that ran all that time (its p99: the worst second's). Uniform traffic would give each of 5 shards 20%.`,
);
const solutionRows = rows.filter((r) => r.name.startsWith('solution'));
const lost = solutionRows.reduce((n, r) => n + Number(r.values['writes lost'] ?? 0), 0);
report.target('acknowledged writes the solution lost across the reshard', lost, { exactly: 0 });
const moved = Number(rows.find((r) => r.name === 'solution: during reshard')?.values['keys moved']);
report.target('share of keys the solution moved when a fifth shard joined four', moved, { atMost: 25 }, '%');
const evenness = Number(rows.find((r) => r.name === 'solution: after')?.values['max/mean rows']);
report.target("solution's busiest shard after the reshard, as a multiple of the mean", evenness, { atMost: 1.25 }, 'x');
// Splitting the 3 hottest tenants must lower the busiest shard's share of the statements.
report.target(
  `busiest shard's share of statements after splitting the 3 hottest tenants ÷ before (${pct(shares[0]!)}% before)`,
  shares[1]! / shares[0]!,
  { atMost: 0.99 },
  'x',
);
const file = report.write({ options, durationSec: DURATION_SEC, connections: CONNECTIONS, reshards });
console.log(`Figures written to ${file}`);
