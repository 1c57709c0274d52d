/**
 * Load script: the starter (1 + N queries), the DataLoader solution (2) and the single LATERAL query (1),
 * each at N = 10 and N = 100 authors per page, in short rounds taken in turns, against the same seeded dataset
 * (5,000 authors, ~100,000 posts), first with PostgreSQL at loopback, then with it 5 ms away (each way)
 * behind the bench kit's latency proxy. Statements and rows per request come from the servers' pool
 * meters, the instrument the spec uses; the pool's wait per query and the share of the run it was
 * full say how much of a latency is queueing for one of the pool's connections.
 *
 * Targets, with the database 5 ms away: at N = 100 the solution serves at least 10x the starter's req/s
 * and its p50 is at most a tenth of the starter's, each the median of the rounds' pairs (a slow moment
 * of a shared machine spoils one pair, not the figure). At every distance the solution runs as many
 * statements per request at N = 100 as at N = 10. The loopback ratio is printed as a figure, not a
 * target: on a 2-core machine, where the load generator, the API, PostgreSQL and the kernel share the
 * cores, a loopback round trip costs tens of microseconds and the starter's 99 extra statements cost
 * only CPU; the README shows what that figure was and why.
 */
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import {
  benchDurationSec,
  createReport,
  type Distances,
  distanceLabel,
  forkServers,
  HTTP,
  inRounds,
  type LoadResult,
  mergeRounds,
  pairedRatio,
  runLoad,
  type TableRow,
  withDistance,
} from '@labs/bench';
import type { BenchServerOptions } from './servers.ts';

const DURATION_SEC = benchDurationSec(5);
/** Rounds per target, page size and distance, taken in turns; each a share of DURATION_SEC, at least 1 s. */
const ROUNDS = 5;
// At least 2 s: 5 ms away a starter page at N = 100 takes over a second, and a p50 needs a few of them.
const ROUND_SEC = Math.max(2, Math.round(DURATION_SEC / ROUNDS));
const CONNECTIONS = 8;
const PAGE_SIZES = [10, 100];
// One pool connection per load connection: a smaller pool makes a p50 partly queueing for a connection
// (at 6 for 8 connections, about half of it). Three pools of 8 need 24 connections: a real PostgreSQL.
const options: BenchServerOptions = { poolSize: CONNECTIONS };
/** Loopback first, then PostgreSQL one network hop away, as in production (0.2 to 1 ms inside a zone). */
const LOOPBACK: Distances = {};
/**
 * 5 ms each way (a database in a neighbouring region, or behind a slow link): the starter's page waits
 * for about 101 round trips and the solution's for 2, so the wire decides the ratio. Closer, the
 * solution's CPU time (a 30 KB page) weighs as much as its round trips, and on a busy 2-core machine
 * its p50 ratio was luck: 0.10 to 0.14 at 1 ms, and 0.05 to 0.15 at 2 ms (load average 15 to 40).
 */
const FAR: Distances = { postgres: 5 };
const DISTANCES = [LOOPBACK, FAR];

console.log(
  `N+1 load test: GET /api/authors?limit=N for N = ${PAGE_SIZES.join(' and ')}, ${CONNECTIONS} connections, ` +
    `${ROUNDS} rounds of ${ROUND_SEC} s per run taken in turns, a pool of ${options.poolSize} connections per target; ` +
    `PostgreSQL ${DISTANCES.map((d) => distanceLabel(d).slice(1, -1)).join(', then ')}.`,
);

/** What one run measured: the load client's figures and the servers' counters per request. */
interface Measured {
  result: LoadResult;
  /** Each round's figures, in the order the rounds ran (for the paired ratios). */
  rounds: LoadResult[];
  statementsPerRequest: number;
  rowsPerRequest: number;
  /** Mean wait for one of the pool's connections, per checkout (a query). */
  poolWaitMsPerQuery: number;
  /** Share of the run during which every connection of the target's pool was checked out. */
  poolFullPercent: number;
}
const measured = new Map<string, Measured>();
const keyOf = (target: string, n: number, label: string) => `${target} @ N=${n} ${label}`;
// An edited src/ runs as "your code" beside the committed starter (servers.ts): rows say whose code they ran.
const report = createReport({ lab: 'n-plus-one', dir: join(import.meta.dirname, '..'), starterBeside: true });
const rows: TableRow[] = [];
/** What each distance was and what the proxy applied, printed again under the table. */
const distanceNotes: string[] = [];
/** Per distance label: the mean delay the proxy applied each way (0 at loopback), the distance measured. */
const appliedMs = new Map<string, number>();
let targets: string[] = [];

for (const distances of DISTANCES) {
  await using far = report.distance(await withDistance(distances));
  console.log(`\nPostgreSQL ${far.label.slice(1, -1)}:`);
  for (const line of far.describe()) console.log(`  ${line}`);
  distanceNotes.push(...far.describe());
  console.log('Seeding 5,000 authors and their posts...');
  await using servers = await forkServers(new URL('./servers.ts', import.meta.url), options, { env: far.env });
  targets = Object.keys(servers.urls);
  const pageUrl = (target: string, n: number) => `${servers.urls[target]}/api/authors?limit=${n}`;

  /**
   * The servers' counters once every request that arrived has run all its queries: autocannon stops
   * sending at its deadline, but the server finishes the pages it started (at 1 ms, a starter page at
   * N = 100 may take a second more), so poll until no target is loading a page.
   */
  const settledStats = async () => {
    for (let i = 0; i < 300; i++) {
      const now = await servers.stats();
      if (targets.every((t) => now[`${t}.busy`] === 0)) return now;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('the servers were still loading pages 15 s after the load stopped');
  };

  // A figure means nothing for a wrong answer: every target must serve the reference's pages (the spec
  // proves the reference right; nothing else runs the single-query version, or your edited starter here).
  const reference = 'solution (DataLoader)';
  for (const n of PAGE_SIZES) {
    const pages = await Promise.all(targets.map(async (target) => (await fetch(pageUrl(target, n))).json()));
    const expected = pages[targets.indexOf(reference)];
    const wrong = targets.filter((_, i) => !isDeepStrictEqual(pages[i], expected));
    if (wrong.length > 0) throw new Error(`At N=${n}, ${wrong.join(' and ')} served another page than ${reference}`);
  }

  // One second each first, so no target is measured while V8 is still compiling its code path (and
  // every pool has opened its connections, which through the proxy costs several round trips each).
  console.log('Warming up:');
  for (const target of targets) {
    await runLoad({ name: target, url: pageUrl(target, 10), durationSec: 1, connections: CONNECTIONS });
  }

  console.log(`Measuring (${ROUNDS} rounds of ${ROUND_SEC} s, the targets and page sizes taking turns):`);
  const between = (a: Record<string, number>, b: Record<string, number>, key: string) => (b[key] ?? 0) - (a[key] ?? 0);
  const runs = PAGE_SIZES.flatMap((n) => targets.map((target) => ({ target, n, key: `${target}|${n}` })));
  const measuredRounds = await inRounds(
    runs.map((r) => r.key),
    ROUNDS,
    async (key) => {
      const { target, n } = runs.find((r) => r.key === key)!;
      const before = await settledStats();
      const result = await runLoad({
        name: `${target}, N=${n} ${far.label}`,
        url: pageUrl(target, n),
        durationSec: ROUND_SEC,
        connections: CONNECTIONS,
      });
      const atDeadline = await servers.stats();
      const after = await settledStats();
      const delta = (name: string) => between(before, after, `${target}.${name}`);
      return {
        result,
        requests: delta('requests'),
        statements: delta('statements'),
        rows: delta('rows'),
        checkouts: delta('checkouts'),
        poolWaitMs: delta('poolWaitMs'),
        poolFullMs: between(before, atDeadline, `${target}.poolFullMs`),
        runMs: between(before, atDeadline, 'clockMs'),
      };
    },
  );
  for (const { target, n, key } of runs) {
    const each = measuredRounds.get(key)!;
    const name = `${target}, N=${n} ${far.label}`;
    const sum = (pick: (r: (typeof each)[number]) => number) => each.reduce((total, r) => total + pick(r), 0);
    const round2 = (x: number) => Math.round(x * 100) / 100;
    const per = (part: number, whole: number) => (whole > 0 ? round2(part / whole) : 0);
    const result = mergeRounds(
      name,
      each.map((r) => r.result),
    );
    const m: Measured = {
      result,
      rounds: each.map((r) => r.result),
      statementsPerRequest: per(
        sum((r) => r.statements),
        sum((r) => r.requests),
      ),
      rowsPerRequest: per(
        sum((r) => r.rows),
        sum((r) => r.requests),
      ),
      poolWaitMsPerQuery: per(
        sum((r) => r.poolWaitMs),
        sum((r) => r.checkouts),
      ),
      poolFullPercent: Math.round(
        per(
          100 * sum((r) => r.poolFullMs),
          sum((r) => r.runMs),
        ),
      ),
    };
    measured.set(keyOf(target, n, far.label), m);
    rows.push(
      HTTP.row(name, result, {
        'statements/request': m.statementsPerRequest,
        'rows/request': m.rowsPerRequest,
        'pool wait/query': m.poolWaitMsPerQuery,
        'pool full': m.poolFullPercent,
        non2xx: result.requests - (result.statusCounts['200'] ?? 0),
      }),
    );
  }
  const applied = await far.applied();
  for (const line of applied) console.log(`  ${line}`);
  distanceNotes.push(...applied);
  appliedMs.set(far.label, far.record?.services.postgres?.appliedMeanDelayMs ?? 0);
}

report.table(`N+1: a page of N authors with their 3 latest posts, PostgreSQL at loopback and ${FAR.postgres} ms away`, {
  columns: [
    ...HTTP.columns,
    { name: 'statements/request' },
    { name: 'rows/request' },
    { name: 'pool wait/query', unit: 'ms', kind: 'latency' },
    { name: 'pool full', unit: '%' },
    { name: 'non2xx' },
  ],
  rows,
  lesson: 'statements/request',
});
for (const line of distanceNotes) console.log(line);

const starter = 'starter';
const solution = 'solution (DataLoader)';
const at = (target: string | undefined, n: number, distances: Distances) =>
  target === undefined ? undefined : measured.get(keyOf(target, n, distanceLabel(distances)));
/** The median of `values`. */
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};
/**
 * Solution ÷ starter at N = 100, each the median of the rounds' pairs (the two ran moments apart):
 * req/s, and p50 (sub-millisecond, from the load kit's own timing).
 */
const ratios = (distances: Distances) => {
  const s = at(starter, 100, distances);
  const d = at(solution, 100, distances);
  if (!s || !d) return undefined;
  const rps = pairedRatio(d.rounds, s.rounds);
  const p50s = d.rounds.map((round, i) => round.p50Ms / Math.max(s.rounds[i]!.p50Ms, 1e-9));
  console.log(
    `  solution ÷ starter at N=100 ${distanceLabel(distances)}, per round: req/s ${rps.each.map((r) => r.toFixed(1)).join(', ')}; ` +
      `p50 ${p50s.map((r) => r.toFixed(3)).join(', ')}`,
  );
  return { starter: s.result, solution: d.result, rps: rps.median, p50: median(p50s) };
};
const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits });

const far = ratios(FAR);
const farLabel = distanceLabel(FAR);
if (far) {
  report.target(`solution ÷ starter req/s at N=100 ${farLabel} (median of rounds)`, far.rps, { atLeast: 10 }, 'x');
  report.target(`solution p50 ÷ starter p50 at N=100 ${farLabel} (median of rounds)`, far.p50, { atMost: 0.1 }, 'x');
}
for (const distances of DISTANCES) {
  const d10 = at(solution, 10, distances);
  const d100 = at(solution, 100, distances);
  if (d10 && d100) {
    report.target(
      `solution statements/request at N=100, as many as at N=10 ${distanceLabel(distances)}`,
      d100.statementsPerRequest,
      { exactly: d10.statementsPerRequest },
    );
  }
}
// A fast answer that is a 503 would flatter a target: every measured response must be a page.
const non2xx = rows.reduce((sum, row) => sum + Number(row.values.non2xx), 0);
report.target('responses other than 200 in the measured runs', non2xx, { exactly: 0 });

const near = ratios(LOOPBACK);
if (near) {
  console.log(
    `Loopback: at N=100 the solution serves ${fmt(near.solution.rps)} req/s vs the starter's ` +
      `${fmt(near.starter.rps)}, p50 ${fmt(near.solution.p50Ms, 1)} vs ${fmt(near.starter.p50Ms, 1)} ms. ` +
      'Figures, not targets: at loopback a round trip costs tens of microseconds, so these ratios measure what a ' +
      'statement costs the CPUs the processes share, not round trips; the README explains.',
  );
  report.figure('solution ÷ starter req/s at N=100 (loopback, median of rounds)', near.rps, 'x');
  report.figure('solution p50 ÷ starter p50 at N=100 (loopback, median of rounds)', near.p50, 'x');
}

// The physical bound at a distance: a request that waits for k statements one after another cannot take
// less than k round trips, each twice the delay the proxy measured applying each way. The DataLoader
// design waits for 2 (the page, then the batch), the single LATERAL query for 1. The starter sends its
// N post queries at once, but 8 pages in flight share a pool of 8, so under this load its pages wait
// for about all 1 + N of them in a row. A design's share is the bound over its p50: near 1, it spends
// its time on the wire; far below, on CPU (building and sending 30 KB of JSON) and queueing.
const farMs = appliedMs.get(farLabel) ?? 0;
console.log(`Round-trip bound at N=100 ${farLabel}: the proxy applied ${farMs.toFixed(2)} ms each way on average.`);
for (const design of targets) {
  const m = at(design, 100, FAR);
  if (!m) continue;
  const boundMs = m.statementsPerRequest * 2 * farMs;
  report.figure(
    `${design}: round-trip bound at N=100 ${farLabel} (${m.statementsPerRequest} round trips per request)`,
    boundMs,
    'ms',
  );
  report.figure(
    `${design}: the bound's share of its p50 at N=100 ${farLabel}`,
    boundMs / Math.max(m.result.p50Ms, 1e-9),
    'x',
  );
}

const file = report.write({
  options,
  durationSec: DURATION_SEC,
  rounds: ROUNDS,
  roundSec: ROUND_SEC,
  connections: CONNECTIONS,
  pageSizes: PAGE_SIZES,
});
console.log(`Figures written to ${file}`);
