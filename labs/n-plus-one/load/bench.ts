/**
 * Load script: the starter (1 + N queries), the DataLoader solution (2) and the single LATERAL query (1),
 * each at N = 10 and N = 100 authors per page, one autocannon run each, against the same seeded dataset
 * (5,000 authors, ~100,000 posts). Statements and rows per request come from the servers' pool meters,
 * the instrument the spec uses. Target: at N = 100 the solution serves at least 10x the starter's
 * req/s, with the same number of statements per request at both page sizes.
 */
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import {
  benchDurationSec,
  type ComparisonRow,
  forkServers,
  type LoadResult,
  printComparison,
  runLoad,
  verdict,
  writeResults,
} from '@labs/bench';
import type { BenchServerOptions } from './servers.ts';

const DURATION_SEC = benchDurationSec(3);
const CONNECTIONS = 8;
const PAGE_SIZES = [10, 100];
const options: BenchServerOptions = { poolSize: 6 };

console.log(
  `N+1 load test: GET /api/authors?limit=N for N = ${PAGE_SIZES.join(' and ')}, ${CONNECTIONS} connections, ` +
    `${DURATION_SEC} s per run, a pool of ${options.poolSize} connections per target.`,
);
console.log('Seeding 5,000 authors and their posts...');
await using servers = await forkServers(new URL('./servers.ts', import.meta.url), options);
const targets = Object.keys(servers.urls);
const pageUrl = (target: string, n: number) => `${servers.urls[target]}/api/authors?limit=${n}`;

/**
 * The servers' counters once the last requests of a run have finished: autocannon stops sending at
 * the deadline, but responses in flight still run their queries, so poll until two readings agree.
 */
async function settledStats(previous: Record<string, number>): Promise<Record<string, number>> {
  let last = previous;
  for (let i = 0; i < 100; i++) {
    const now = await servers.stats();
    if (i > 0 && Object.keys(now).every((k) => now[k] === last[k])) return now;
    last = now;
    await new Promise((r) => setTimeout(r, 20));
  }
  return last;
}

// A figure means nothing for a wrong answer: every target must serve the reference's pages (the spec
// proves the reference right; nothing else runs the single-query version, or your edited starter here).
const reference = 'solution (DataLoader)';
for (const n of PAGE_SIZES) {
  const pages = await Promise.all(targets.map(async (target) => (await fetch(pageUrl(target, n))).json()));
  const expected = pages[targets.indexOf(reference)];
  const wrong = targets.filter((_, i) => !isDeepStrictEqual(pages[i], expected));
  if (wrong.length > 0) throw new Error(`At N=${n}, ${wrong.join(' and ')} served another page than ${reference}`);
}

// One second each first, so no target is measured while V8 is still compiling its code path.
console.log('Warming up:');
for (const target of targets) {
  await runLoad({ name: target, url: pageUrl(target, 10), durationSec: 1, connections: CONNECTIONS });
}

console.log('Measuring:');
const rows: ComparisonRow[] = [];
const byKey = new Map<string, { result: LoadResult; statementsPerRequest: number }>();
for (const n of PAGE_SIZES) {
  for (const target of targets) {
    const before = await settledStats(await servers.stats());
    const result = await runLoad({
      name: `${target}, N=${n}`,
      url: pageUrl(target, n),
      durationSec: DURATION_SEC,
      connections: CONNECTIONS,
    });
    const after = await settledStats(before);
    const delta = (key: string) => (after[`${target}.${key}`] ?? 0) - (before[`${target}.${key}`] ?? 0);
    const requests = delta('requests');
    const perRequest = (key: string) => (requests > 0 ? Math.round((delta(key) / requests) * 100) / 100 : 0);
    const statementsPerRequest = perRequest('statements');
    byKey.set(`${target}@${n}`, { result, statementsPerRequest });
    rows.push({
      name: `${target}, N=${n}`,
      result,
      evidence: {
        'statements/request': statementsPerRequest,
        'rows/request': perRequest('rows'),
        non2xx: result.requests - (result.statusCounts['200'] ?? 0),
      },
    });
  }
}

printComparison('N+1: a page of N authors with their 3 latest posts', rows);
const [starter, solution] = targets;
const s100 = byKey.get(`${starter}@100`);
const d100 = byKey.get(`${solution}@100`);
const d10 = byKey.get(`${solution}@10`);
if (s100 && d100 && d10) {
  const ratio = d100.result.rps / Math.max(s100.result.rps, 1e-9);
  verdict(
    ratio >= 10,
    `at N=100 the solution serves ${Math.round(d100.result.rps)} req/s vs the starter's ${Math.round(s100.result.rps)} (${ratio.toFixed(1)}x; target at least 10x)`,
  );
  verdict(
    d10.statementsPerRequest === d100.statementsPerRequest,
    `the solution makes PostgreSQL run ${d10.statementsPerRequest} statements per request at N=10 and ${d100.statementsPerRequest} at N=100 (constant); the starter ${byKey.get(`${starter}@10`)?.statementsPerRequest} and ${s100.statementsPerRequest}`,
  );
}
const file = writeResults(join(import.meta.dirname, '..'), 'n-plus-one', {
  options,
  durationSec: DURATION_SEC,
  connections: CONNECTIONS,
  pageSizes: PAGE_SIZES,
  rows,
});
console.log(`Figures written to ${file}`);
