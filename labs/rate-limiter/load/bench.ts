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
  target,
  writeResults,
} from '@labs/bench';
import { createRedisClient, resolveService } from '@labs/services';
import type { BenchServerOptions } from './servers.ts';

const DURATION_SEC = benchDurationSec(5);
const CONNECTIONS = 48; // a multiple of the instance count, so each instance gets the same share
const options: BenchServerOptions = {
  limit: 1000,
  windowMs: 1000,
  instances: 3,
  // 100 a minute: once the abuser has spent it, each retry must wait 0.6 s (GCRA's emission interval),
  // which is how long a limiter may answer it without asking Redis again.
  flood: { limit: 100, windowMs: 60_000 },
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
  target('solution ÷ rate-limiter-flexible req/s', solution.rps / flexible.rps, { atLeast: 1 }, 'x');
  target('solution ÷ bare req/s', solution.rps / bare.rps, { atLeast: 0.6 }, 'x');
  target('requests the solution over-admitted', Number(rows[2]?.evidence['over-admitted']), { exactly: 0 });
}

// The flood: one abusive key hammers all three instances while well-behaved clients (many keys, each far
// under its limit, a steady 300 req/s in all) keep using the API. A limiter that asks Redis about every
// denied request spends its capacity on the abuser; one that remembers a denial until its Retry-After
// answers the abuser locally. Redis's own command counter says how many round trips a denial cost.
const FLOOD_CONNECTIONS = 40;
// 300 keys at 300 req/s in all: one request a second each, so none comes near 100 a minute.
const WELL_BEHAVED = { connections: 6, rate: 300, keys: 300 };
const redis = createRedisClient((await resolveService('redis', { log: null })).url);
/** Script calls Redis has served so far (the limiters run GCRA as EVALSHA, rate-limiter-flexible as EVAL*). */
async function scriptCalls(): Promise<number> {
  const info = await redis.info('commandstats');
  return [...info.matchAll(/^cmdstat_(?:evalsha|eval|evalsha_ro|eval_ro):calls=(\d+)/gm)].reduce(
    (n, m) => n + Number(m[1]),
    0,
  );
}

console.log(
  `Flood: one key on ${FLOOD_CONNECTIONS} connections, beside ${WELL_BEHAVED.keys} well-behaved keys at ${WELL_BEHAVED.rate} req/s:`,
);
const floodRows: ComparisonRow[] = [];
for (const name of ['bare', 'solution', 'rate-limiter-flexible']) {
  let n = 0;
  const calls = await scriptCalls();
  const [flood, polite] = await Promise.all([
    runLoad({
      name: `${name} (flood)`,
      url: urlsOf(`flood-${name}`),
      durationSec: DURATION_SEC,
      connections: FLOOD_CONNECTIONS,
      headers: { 'x-api-key': `flood-${name}` },
    }),
    runLoad({
      name: `${name} (well-behaved)`,
      url: urlsOf(`flood-${name}`),
      durationSec: DURATION_SEC,
      connections: WELL_BEHAVED.connections,
      overallRate: WELL_BEHAVED.rate,
      quiet: true,
      requests: [
        {
          setupRequest: (req) => ({
            ...req,
            headers: { ...req.headers, 'x-api-key': `polite-${name}-${n++ % WELL_BEHAVED.keys}` },
          }),
        },
      ],
    }),
  ]);
  const denied = flood.statusCounts['429'] ?? 0;
  const admitted = flood.statusCounts['200'] ?? 0;
  const { limit, windowMs } = options.flood;
  const allowed = Math.floor(limit + (limit * flood.durationSec * 1000) / windowMs);
  // Every well-behaved request costs one script call; what is left was spent on the abuser.
  const spentOnFlood = Math.max(0, (await scriptCalls()) - calls - polite.requests);
  floodRows.push({
    name: `${name} (flood)`,
    result: flood,
    evidence: {
      denied,
      'over-admitted': name === 'bare' ? '-' : Math.max(0, admitted - allowed),
      'Redis calls per denial': name === 'bare' ? '-' : denied > 0 ? spentOnFlood / denied : 0,
      'well-behaved p99 ms': polite.p99Ms,
      'well-behaved 2xx': polite.statusCounts['200'] ?? 0,
      'well-behaved 429s': polite.statusCounts['429'] ?? 0,
    },
  });
}
redis.disconnect();
printComparison('Flood: one abusive key, three instances, well-behaved clients beside it', floodRows);
const [bareFlood, solutionFlood] = floodRows;
if (bareFlood && solutionFlood) {
  target(
    'solution ÷ bare req/s during the flood',
    solutionFlood.result.rps / bareFlood.result.rps,
    { atLeast: 0.85 },
    'x',
  );
  target('Redis calls per denied request during the flood', Number(solutionFlood.evidence['Redis calls per denial']), {
    atMost: 0.1,
  });
  target('requests the solution over-admitted during the flood', Number(solutionFlood.evidence['over-admitted']), {
    exactly: 0,
  });
}

const file = writeResults(join(import.meta.dirname, '..'), 'rate-limiter', {
  options,
  durationSec: DURATION_SEC,
  connections: CONNECTIONS,
  rows: [...rows, ...floodRows],
});
console.log(`Figures written to ${file}`);
