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
  forkServers,
  type LoadOptions,
  printComparison,
  runLoad,
  verdict,
  writeResults,
} from '@labs/bench';
import { TARGETS, type BenchServerOptions } from './servers.ts';

const DURATION_SEC = benchDurationSec(4);
const CONNECTIONS = 32;
const WRITE_RATIO = 0.03;
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

interface Traffic {
  requests: Request[];
  stale: () => number;
  writes: () => number;
}

/** One request definition autocannon repeats: a Zipf id, sometimes a PUT, checked against acked versions. */
function traffic(): Traffic {
  const nextId = zipf(options.users, ZIPF_S);
  const acked = new Map<number, number>(); // id -> highest version a PUT response has confirmed
  let stale = 0;
  let writes = 0;
  let n = 0;
  type Context = { id?: number; write?: boolean; expected?: number };
  const request = {
    method: 'GET',
    path: '/users/1',
    setupRequest(req: Request, context: Context) {
      const id = nextId();
      const write = Math.random() < WRITE_RATIO;
      context.id = id;
      context.write = write;
      context.expected = acked.get(id);
      if (!write) return { ...req, method: 'GET', path: `/users/${id}`, body: undefined, headers: {} };
      const body = JSON.stringify({ name: `Bench ${++n}`, email: `user${id}@example.com` });
      return { ...req, method: 'PUT', path: `/users/${id}`, body, headers: { 'content-type': 'application/json' } };
    },
    onResponse(status: number, body: string, context: Context) {
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
  return { requests: [request], stale: () => stale, writes: () => writes };
}

console.log(
  `Caching load test: ${options.users.toLocaleString('en-US')} users, Zipf s=${ZIPF_S} ids, ${WRITE_RATIO * 100}% writes, ` +
    `${options.instances} instances per target, ${CONNECTIONS} connections, ${DURATION_SEC} s per target.`,
);
await using servers = await forkServers(new URL('./servers.ts', import.meta.url), options);

const rows: ComparisonRow[] = [];
for (const target of TARGETS) {
  const urls = Object.entries(servers.urls)
    .filter(([name]) => name.startsWith(`${target}#`))
    .map(([, url]) => url);
  const load = traffic();
  const before = await servers.stats();
  const result = await runLoad({
    name: target,
    url: urls,
    durationSec: DURATION_SEC,
    connections: CONNECTIONS,
    requests: load.requests,
  });
  const after = await servers.stats();
  const delta = (key: string) => (after[`${target}.${key}`] ?? 0) - (before[`${target}.${key}`] ?? 0);
  const lookups = delta('lookups');
  rows.push({
    name: target,
    result,
    evidence: {
      'hit ratio': target === 'no-cache' ? '-' : Number((lookups === 0 ? 0 : delta('hits') / lookups).toFixed(3)),
      'db reads/s': Math.round(delta('dbReads') / result.durationSec),
      writes: load.writes(),
      'stale reads': load.stale(),
    },
  });
}

printComparison('Caching: GET/PUT /users/:id, two instances per target', rows);
const [noCache, , solution] = rows;
if (noCache && solution) {
  const hitRatio = Number(solution.evidence['hit ratio']);
  verdict(hitRatio >= 0.9, `solution cache hit ratio ${hitRatio} (at least 0.9)`);
  verdict(
    solution.evidence['stale reads'] === 0,
    `solution served ${solution.evidence['stale reads']} stale reads (zero)`,
  );
  verdict(
    solution.result.p99Ms <= noCache.result.p99Ms / 2,
    `solution p99 ${solution.result.p99Ms} ms vs no-cache p99 ${noCache.result.p99Ms} ms (at most half)`,
  );
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
