/**
 * Load script: GET /users/:id with Zipf-distributed ids (a few users are very popular, most are not)
 * and a few percent of PUTs, against no cache, the starter and the solution, two instances each, first
 * with PostgreSQL and Redis at loopback, then with PostgreSQL 5 ms away (each way) behind the bench
 * kit's latency proxy. Redis stays at loopback: see FAR below.
 *
 * Stale reads are counted by the load client: every PUT's response carries the row's new version, and
 * a GET *sent after* that response arrived must not return an older version. Reads that overlap a
 * write may return either version; they are not counted.
 *
 * The client also times each response by what it was (X-Cache: hit, a read that reached the database,
 * a write), so the table says where a p99 comes from: with 3% writes and a miss after each, more than
 * 1% of the solution's requests pay a database round trip, and its p99 is one of them.
 */
import { join } from 'node:path';
import {
  benchDurationSec,
  createReport,
  type Distances,
  distanceLabel,
  forkServers,
  HTTP,
  inRounds,
  type LoadOptions,
  mergeRounds,
  runLoad,
  type TableRow,
  withDistance,
} from '@labs/bench';
import { TARGETS, type BenchServerOptions } from './servers.ts';

const DURATION_SEC = benchDurationSec(10);
// Few connections: latency is compared below saturation, where a p99 is service time, not a queue (at 32
// connections both targets saturate two cores, and every p99 is the queue's). CACHING_CONNECTIONS overrides it.
const CONNECTIONS = Number(process.env.CACHING_CONNECTIONS ?? 4);
// Caches earn their keep on read-heavy traffic: one write in 200 requests. (With 3% writes, each followed
// by a miss, more than 1% of requests must wait for PostgreSQL, and a p99 is one of them by definition.)
const WRITE_RATIO = 0.005;
/** Zipf exponent: around 1 for the popularity of web content and users. */
const ZIPF_S = 1.0;
const options: BenchServerOptions = {
  users: 10_000,
  instances: 2,
  ttlMs: 60_000,
};

/** Samples user ids 1..n, id k with probability proportional to 1 / k^s (inverse CDF, binary search). */
function zipf(n: number, s: number): () => number {
  const cdf = new Float64Array(n);
  let total = 0;
  for (let k = 1; k <= n; k++) cdf[k - 1] = total += 1 / k ** s;
  return () => {
    const u = Math.random() * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return lo + 1;
  };
}

/** One autocannon request definition (setupRequest / onResponse). */
type Request = NonNullable<LoadOptions['requests']>[number];

/** What a response was: a read answered from the cache, a read that reached the database, a write. */
type Kind = 'hit' | 'miss' | 'write';

interface Traffic {
  requests: Request[];
  stale: () => number;
  writes: () => number;
  /** Client-side latency of each response by kind, in milliseconds (autocannon's own are whole ms). */
  latencies: Record<Kind, number[]>;
}

/** The p-th percentile (0..100) of `values`, in the unit they are in; 0 when there are none. */
function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0;
}

/** One request definition autocannon repeats: a Zipf id, sometimes a PUT, checked against acked versions. */
function traffic(): Traffic {
  const nextId = zipf(options.users, ZIPF_S);
  const acked = new Map<number, number>(); // id -> highest version a PUT response has confirmed
  let stale = 0;
  let writes = 0;
  let n = 0;
  const latencies: Record<Kind, number[]> = { hit: [], miss: [], write: [] };
  type Context = { id?: number; write?: boolean; expected?: number; sentAt?: number };
  const request = {
    method: 'GET',
    path: '/users/1',
    setupRequest(req: Request, context: Context) {
      const id = nextId();
      const write = Math.random() < WRITE_RATIO;
      context.id = id;
      context.write = write;
      context.expected = acked.get(id);
      // autocannon calls setupRequest just before it writes the request (one in flight per connection).
      context.sentAt = performance.now();
      if (!write) return { ...req, method: 'GET', path: `/users/${id}`, body: undefined, headers: {} };
      const body = JSON.stringify({ name: `Bench ${++n}`, email: `user${id}@example.com` });
      return { ...req, method: 'PUT', path: `/users/${id}`, body, headers: { 'content-type': 'application/json' } };
    },
    onResponse(status: number, body: string, context: Context, headers: Record<string, string>) {
      if (context.sentAt !== undefined) {
        const cache = headers['x-cache'] ?? headers['X-Cache'];
        latencies[context.write ? 'write' : cache === 'hit' ? 'hit' : 'miss'].push(performance.now() - context.sentAt);
      }
      if (status !== 200 || context.id === undefined) return;
      const { version } = JSON.parse(body) as { version: number };
      if (context.write) {
        writes += 1;
        acked.set(context.id, Math.max(acked.get(context.id) ?? 0, version));
      } else if (context.expected !== undefined && version < context.expected) {
        stale += 1;
      }
    },
  } as unknown as Request;
  return { requests: [request], stale: () => stale, writes: () => writes, latencies };
}

/**
 * The database far enough that a miss costs more than the machine's scheduling noise: 5 ms each way, a
 * 10 ms round trip (another region, or a slow link). At 2 ms, on a 2-core machine at load average 20 to
 * 30, the servers' event loop ran several milliseconds late even at the median, and the read p50 ratio
 * came out 0.14 in one run and 0.60 in the next; at 1 ms the scheduler blurred the gain altogether.
 * Redis stays at loopback: the proxy holds a chunk for whole timer ticks, so "0.5 ms" comes out near
 * 1 ms each way (measured: 0.96 ms on average), which would put the cache as far away as the database.
 */
const FAR: Distances = { postgres: 5 };
const DISTANCES: Distances[] = [{}, FAR];

console.log(
  `Caching load test: ${options.users.toLocaleString('en-US')} users, Zipf s=${ZIPF_S} ids, ${WRITE_RATIO * 100}% writes, ` +
    `${options.instances} instances per target, ${CONNECTIONS} connections, ${DURATION_SEC} s per target, ` +
    `at ${DISTANCES.map(distanceLabel).join(' and ')}.`,
);

// Five rounds of at least 2 s per variant and distance, taking turns (see the measuring loop).
const ROUNDS = 5;
const roundSec = Math.max(2, Math.round(DURATION_SEC / ROUNDS));
/** Per distance, each round's solution read p99 over no-cache's. */
const readP99Ratios = new Map<string, number[]>();
/** Per distance, each round's solution read p50 over no-cache's. */
const readP50Ratios = new Map<string, number[]>();
// An edited src/ runs as "your code" beside the committed starter (servers.ts): rows say whose code they ran.
const report = createReport({ lab: 'caching', dir: join(import.meta.dirname, '..'), starterBeside: true });
const rows: TableRow[] = [];
/** What the table does not show, per row: for judging how noisy a run was. */
const diagnostics: Record<string, number | string>[] = [];
/** The rows of each distance by variant, for its targets. */
const measured: { label: string; byVariant: Map<string, TableRow> }[] = [];
const ms = (n: number) => Number(n.toFixed(1));

for (const distances of DISTANCES) {
  await using far = report.distance(await withDistance(distances));
  console.log(`\n${far.describe().join('\n')}`);
  await using servers = await forkServers(new URL('./servers.ts', import.meta.url), options, { env: far.env });
  const urlsOf = (variant: string) =>
    Object.entries(servers.urls)
      .filter(([name]) => name.startsWith(`${variant}#`))
      .map(([, url]) => url);

  // One second each first, so no variant is measured while V8 is still compiling its code path.
  console.log('Warming up:');
  for (const variant of TARGETS) {
    await runLoad({
      name: `${variant} ${far.label}`,
      url: urlsOf(variant),
      durationSec: 1,
      connections: CONNECTIONS,
      requests: traffic().requests,
    });
  }

  // The variants take turns in short rounds (inRounds): a p99 depends on the moment it was measured in,
  // so each pair of rounds meets the same moments, and the read-p99 target is the median of the pairs.
  console.log(`Measuring (${ROUNDS} rounds of ${roundSec} s, the variants taking turns):`);
  const rounds = await inRounds(TARGETS, ROUNDS, async (variant) => {
    const load = traffic();
    const before = await servers.stats();
    const result = await runLoad({
      name: `${variant} ${far.label}`,
      url: urlsOf(variant),
      durationSec: roundSec,
      connections: CONNECTIONS,
      requests: load.requests,
    });
    const after = await servers.stats();
    const delta = (key: string) => (after[`${variant}.${key}`] ?? 0) - (before[`${variant}.${key}`] ?? 0);
    return {
      result,
      latencies: load.latencies,
      stale: load.stale(),
      writes: load.writes(),
      lookups: delta('lookups'),
      hits: delta('hits'),
      dbReads: delta('dbReads'),
      lagP99Ms: after['loop.lagP99Ms'] ?? 0,
      lagMaxMs: after['loop.lagMaxMs'] ?? 0,
    };
  });
  const byVariant = new Map<string, TableRow>();
  for (const variant of TARGETS) {
    const measuredRounds = rounds.get(variant)!;
    const result = mergeRounds(
      `${variant} ${far.label}`,
      measuredRounds.map((r) => r.result),
    );
    const sum = (pick: (r: (typeof measuredRounds)[number]) => number) =>
      measuredRounds.reduce((total, r) => total + pick(r), 0);
    const all = (kind: Kind) => measuredRounds.flatMap((r) => r.latencies[kind]);
    const [hit, miss, write] = [all('hit'), all('miss'), all('write')];
    const answered = hit.length + miss.length + write.length;
    const lookups = sum((r) => r.lookups);
    const row = HTTP.row(`${variant} ${far.label}`, result, {
      'hit ratio': variant === 'no-cache' ? '-' : Number((lookups === 0 ? 0 : sum((r) => r.hits) / lookups).toFixed(3)),
      'db reads/s': Math.round(sum((r) => r.dbReads) / result.durationSec),
      'stale reads': sum((r) => r.stale),
      // Requests that waited for PostgreSQL: the reads it answered and every write.
      'via db': answered === 0 ? 0 : Number(((100 * (miss.length + write.length)) / answered).toFixed(1)),
      'read p50': Number(percentile([...hit, ...miss], 50).toFixed(2)),
      'read p99': ms(percentile([...hit, ...miss], 99)),
      'hit p99': variant === 'no-cache' ? '-' : ms(percentile(hit, 99)),
      'miss p99': ms(percentile(miss, 99)),
      'write p99': ms(percentile(write, 99)),
    });
    rows.push(row);
    byVariant.set(variant, row);
    const lag = Math.max(...measuredRounds.map((r) => r.lagP99Ms));
    diagnostics.push({
      row: row.name,
      writes: sum((r) => r.writes),
      loadGeneratorBusy: Number(result.loadGeneratorBusy.toFixed(2)),
      serverLoopLagP99Ms: ms(lag),
      serverLoopLagMaxMs: ms(Math.max(...measuredRounds.map((r) => r.lagMaxMs))),
    });
    console.log(
      `    ${row.name}: ${sum((r) => r.writes)} writes; the servers' event loop ran late by up to ${ms(lag)} ms at p99 (a busy machine shows here)`,
    );
  }
  // Each round's read percentiles, solution over no-cache: one slow moment spoils one pair, not the figure.
  const readPOf = (variant: string, p: number) =>
    rounds.get(variant)!.map((r) => percentile([...r.latencies.hit, ...r.latencies.miss], p));
  const pairsAt = (p: number) => readPOf('solution', p).map((x, i) => x / Math.max(readPOf('no-cache', p)[i]!, 1e-9));
  readP99Ratios.set(far.label, pairsAt(99));
  readP50Ratios.set(far.label, pairsAt(50));
  for (const line of await far.applied()) console.log(line);
  measured.push({ label: far.label, byVariant });
}

report.table('Caching: GET/PUT /users/:id, two instances per target', {
  columns: [
    ...HTTP.columns,
    { name: 'hit ratio' },
    { name: 'db reads/s' },
    { name: 'stale reads' },
    { name: 'via db', unit: '%' },
    { name: 'read p50', unit: 'ms', kind: 'latency' },
    { name: 'read p99', unit: 'ms', kind: 'latency' },
    { name: 'hit p99', unit: 'ms', kind: 'latency' },
    { name: 'miss p99', unit: 'ms', kind: 'latency' },
    { name: 'write p99', unit: 'ms', kind: 'latency' },
  ],
  rows,
  lesson: 'stale reads',
});
for (const { label, byVariant } of measured) {
  const solution = byVariant.get('solution');
  if (!solution) continue;
  // Reads, the requests a cache is for: a write waits for PostgreSQL with or without one. At loopback a
  // database read costs about what a Redis read does, so the cache's gain is lost in the scheduler's noise
  // there (0.7x on an idle machine): both ratios are figures there. With the database a round trip away
  // the gain is the lesson, and the target asks for it on the median read: on a busy machine the servers'
  // event loop runs 65 to 115 ms late at p99 (printed above), so a p99 there measures the scheduler, and
  // its ratio swung from 0.21 to 0.77 between rounds of one run. The p99 ratio stays, as a figure.
  const medianOf = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  const far = label !== distanceLabel({});
  for (const [statistic, pairs] of [
    ['p50', readP50Ratios.get(label)!],
    ['p99', readP99Ratios.get(label)!],
  ] as const) {
    const median = medianOf(pairs);
    console.log(
      `  read ${statistic} ratio per round ${label}: ${pairs.map((r) => r.toFixed(2)).join(', ')}; median ${median.toFixed(2)}`,
    );
    const name = `solution read ${statistic} ÷ no-cache read ${statistic} ${label} (median of rounds)`;
    if (far && statistic === 'p50') report.target(name, median, { atMost: 0.5 }, 'x');
    else report.figure(name, median, 'x');
  }
  report.target(`solution cache hit ratio ${label}`, Number(solution.values['hit ratio']), { atLeast: 0.9 });
  report.target(`solution stale reads ${label}`, Number(solution.values['stale reads']), { exactly: 0 });
}
const file = report.write({
  options,
  durationSec: DURATION_SEC,
  connections: CONNECTIONS,
  writeRatio: WRITE_RATIO,
  zipfS: ZIPF_S,
  diagnostics,
});
console.log(`Figures written to ${file}`);
