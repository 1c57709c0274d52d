/**
 * Load script: GET /users/:id with Zipf-distributed ids (a few users are very popular, most are not)
 * and a few percent of PUTs, against no cache, the starter and the solution, two instances each.
 *
 * Stale reads are counted by the load client: every PUT's response carries the row's new version, and
 * a GET *sent after* that response arrived must not return an older version. Reads that overlap a
 * write may return either version; they are not counted.
 */
import { join } from 'node:path';
import {
  benchDurationSec,
  type ComparisonRow,
  type Distances,
  distanceLabel,
  forkServers,
  type LoadOptions,
  printComparison,
  runLoad,
  target,
  withDistance,
  writeResults,
} from '@labs/bench';
import { TARGETS, type BenchServerOptions } from './servers.ts';

const DURATION_SEC = benchDurationSec(4);
const CONNECTIONS = Number(process.env.X_CONN ?? 32);
const WRITE_RATIO = 0.03;
/** Zipf exponent: around 1 for the popularity of web content and users. */
const ZIPF_S = Number(process.env.X_ZIPF ?? 1.0);
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

/** Where the services are: at loopback, then the database a network hop away (see DISTANCES below). */
const FAR: Distances = {
  postgres: Number(process.env.CACHING_DB_MS ?? 1),
  ...(process.env.CACHING_REDIS_MS ? { redis: Number(process.env.CACHING_REDIS_MS) } : {}),
};
const DISTANCES: Distances[] = process.env.X_FAR_ONLY ? [FAR] : [{}, FAR];

console.log(
  `Caching load test: ${options.users.toLocaleString('en-US')} users, Zipf s=${ZIPF_S} ids, ${WRITE_RATIO * 100}% writes, ` +
    `${options.instances} instances per target, ${CONNECTIONS} connections, ${DURATION_SEC} s per target, ` +
    `at ${DISTANCES.map(distanceLabel).join(' and ')}.`,
);

const rows: ComparisonRow[] = [];
/** The rows of one distance, by target, for its targets. */
const measured: { label: string; byTarget: Map<string, ComparisonRow> }[] = [];
for (const distances of DISTANCES) {
  await using far = await withDistance(distances);
  console.log(`\n${far.describe().join('\n')}`);
  await using servers = await forkServers(new URL('./servers.ts', import.meta.url), options, { env: far.env });
  const urlsOf = (variant: string) =>
    Object.entries(servers.urls)
      .filter(([name]) => name.startsWith(`${variant}#`))
      .map(([, url]) => url);

  // One second each first, so no target is measured while V8 is still compiling its code path.
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

  console.log('Measuring:');
  const byTarget = new Map<string, ComparisonRow>();
  for (const variant of TARGETS) {
    const load = traffic();
    const before = await servers.stats();
    const result = await runLoad({
      name: `${variant} ${far.label}`,
      url: urlsOf(variant),
      durationSec: DURATION_SEC,
      connections: CONNECTIONS,
      requests: load.requests,
    });
    const after = await servers.stats();
    const delta = (key: string) => (after[`${variant}.${key}`] ?? 0) - (before[`${variant}.${key}`] ?? 0);
    const lookups = delta('lookups');
    const row: ComparisonRow = {
      name: `${variant} ${far.label}`,
      result,
      evidence: {
        'hit ratio': variant === 'no-cache' ? '-' : Number((lookups === 0 ? 0 : delta('hits') / lookups).toFixed(3)),
        'db reads/s': Math.round(delta('dbReads') / result.durationSec),
        writes: load.writes(),
        'stale reads': load.stale(),
        'hit p99 ms': variant === 'no-cache' ? '-' : Number(percentile(load.latencies.hit, 99).toFixed(1)),
        'miss p99 ms': Number(percentile(load.latencies.miss, 99).toFixed(1)),
        'write p99 ms': Number(percentile(load.latencies.write, 99).toFixed(1)),
      },
    };
    rows.push(row);
    byTarget.set(variant, row);
    console.log(
      `    server: ${Object.keys(after)
        .filter((k) => k.startsWith(`x.${variant}.`) && k.endsWith('.n'))
        .map((k) => {
          const b = k.slice(0, -2);
          return `${b.slice(3 + variant.length)} n=${after[k]} p50 ${after[`${b}.p50`]?.toFixed(2)} p99 ${after[`${b}.p99`]?.toFixed(2)}`;
        })
        .join('; ')}`,
    );
    const all = [...load.latencies.hit, ...load.latencies.miss, ...load.latencies.write];
    console.log(
      `    client p50 ${percentile(all, 50).toFixed(2)} p99 ${percentile(all, 99).toFixed(2)} p99.9 ${percentile(all, 99.9).toFixed(2)} max ${percentile(all, 100).toFixed(1)} ms; ` +
        `hits ${load.latencies.hit.length} misses ${load.latencies.miss.length} writes ${load.latencies.write.length}; ` +
        `lease checks ${delta('leaseChecks')} (hit ${delta('lease1')} took ${delta('lease2')} wait ${delta('lease0')}); ` +
        `load generator busy ${result.loadGeneratorBusy.toFixed(2)}; server loop delay p99 ${(after['loop.p99Ms'] ?? 0).toFixed(1)} max ${(after['loop.maxMs'] ?? 0).toFixed(1)} ms`,
    );
  }
  for (const line of await far.applied()) console.log(line);
  measured.push({ label: far.label, byTarget });
}

printComparison('Caching: GET/PUT /users/:id, two instances per target, at loopback and at a distance', rows);
for (const { label, byTarget } of measured) {
  const noCache = byTarget.get('no-cache');
  const solution = byTarget.get('solution');
  if (!noCache || !solution) continue;
  target(`solution p99 ÷ no-cache p99 ${label}`, solution.result.p99Ms / noCache.result.p99Ms, { atMost: 0.5 }, 'x');
  target(`solution cache hit ratio ${label}`, Number(solution.evidence['hit ratio']), { atLeast: 0.9 });
  target(`solution stale reads ${label}`, Number(solution.evidence['stale reads']), { exactly: 0 });
}
const file = writeResults(join(import.meta.dirname, '..'), 'caching', {
  options,
  durationSec: DURATION_SEC,
  connections: CONNECTIONS,
  writeRatio: WRITE_RATIO,
  zipfS: ZIPF_S,
  rows,
});
console.log(`Figures written to ${file}`);
