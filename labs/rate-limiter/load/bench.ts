/**
 * Load script: the bare endpoint, the starter, the solution and rate-limiter-flexible, one autocannon
 * run each, every target as three instances sharing one limit. One client (one API key) sends far more
 * than its limit, so the table shows both what the limiter costs and whether it holds the limit.
 *
 * Over-admitted = admitted - allowed, where allowed = limit + limit x elapsed / window: the most a
 * limiter of "`limit` per window, bursts up to `limit`" may admit in the run.
 */
import { join } from 'node:path';
import {
  benchDurationSec,
  type ComparisonRow,
  forkServers,
  printComparison,
  runLoad,
  verdict,
  writeResults,
} from '@labs/bench';
import type { BenchServerOptions } from './servers.ts';

const DURATION_SEC = benchDurationSec(5);
const CONNECTIONS = 48; // a multiple of the instance count, so each instance gets the same share
const options: BenchServerOptions = {
  limit: 1000,
  windowMs: 1000,
  instances: 3,
};

console.log(
  `Rate limiter load test: ${options.instances} instances per target, limit ${options.limit} per ${options.windowMs} ms, ` +
    `${CONNECTIONS} connections, ${DURATION_SEC} s per target.`,
);
await using servers = await forkServers(new URL('./servers.ts', import.meta.url), options);

const TARGETS = ['bare', 'starter', 'solution', 'rate-limiter-flexible'];
const urlsOf = (target: string) =>
  Object.entries(servers.urls)
    .filter(([name]) => name.startsWith(`${target}#`))
    .map(([, url]) => `${url}/api/quote`);

// One second each first, so no target is measured while V8 is still compiling its code path.
console.log('Warming up:');
for (const target of TARGETS) {
  await runLoad({
    name: target,
    url: urlsOf(target),
    durationSec: 1,
    connections: CONNECTIONS,
    headers: { 'x-api-key': `warmup-${target}` },
  });
}

console.log('Measuring:');
const rows: ComparisonRow[] = [];
for (const target of TARGETS) {
  // A fresh API key per target: every limiter starts from a full allowance.
  const headers = { 'x-api-key': `bench-${target}` };
  const result = await runLoad({
    name: target,
    url: urlsOf(target),
    durationSec: DURATION_SEC,
    connections: CONNECTIONS,
    headers,
  });
  const admitted = result.statusCounts['200'] ?? 0;
  const allowed = Math.floor(options.limit + (options.limit * result.durationSec * 1000) / options.windowMs);
  rows.push({
    name: target,
    result,
    evidence: {
      admitted,
      '429s': result.statusCounts['429'] ?? 0,
      allowed: target === 'bare' ? '-' : allowed,
      'over-admitted': target === 'bare' ? '-' : Math.max(0, admitted - allowed),
    },
  });
}

printComparison('Rate limiter: three instances, one shared limit', rows);
const [bare, , solution, flexible] = rows.map((r) => r.result);
if (bare && solution && flexible) {
  verdict(
    solution.rps >= flexible.rps,
    `solution ${Math.round(solution.rps)} req/s vs rate-limiter-flexible ${Math.round(flexible.rps)} req/s (at least as fast)`,
  );
  verdict(
    solution.rps >= 0.6 * bare.rps,
    `solution ${Math.round(solution.rps)} req/s vs bare ${Math.round(bare.rps)} req/s (at least 0.6x)`,
  );
  verdict(
    rows[2]?.evidence['over-admitted'] === 0,
    `solution over-admitted ${rows[2]?.evidence['over-admitted']} requests (zero)`,
  );
}
const file = writeResults(join(import.meta.dirname, '..'), 'rate-limiter', {
  options,
  durationSec: DURATION_SEC,
  connections: CONNECTIONS,
  rows,
});
console.log(`Figures written to ${file}`);
