/**
 * Load script: the bare API, the starter, the solution, rate-limiter-flexible and express-rate-limit (with
 * rate-limit-redis), in interleaved autocannon rounds, every target as three instances sharing one limit.
 * One client (one API key) sends far more than its limit, so the table shows both what the limiter costs and whether it holds the limit.
 *
 * Over-admitted = admitted - allowed, where allowed = limit + limit x elapsed / window: the most a
 * limiter of "`limit` per window, bursts up to `limit`" may admit in the run.
 */
import { join } from 'node:path';
import {
  benchDurationSec,
  createReport,
  forkServers,
  HTTP,
  inRounds,
  type LoadResult,
  mergeRounds,
  pairedRatio,
  runLoad,
  starterEdited,
  type TableRow,
} from '@labs/bench';

/** The middle value (the mean of the middle two for an even count). */
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
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
// An edited src/ is measured as "your code" beside the committed starter (servers.ts): rows say whose code they ran.
const edited = starterEdited(new URL('../src/rate-limiter.ts', import.meta.url));
const report = createReport({ lab: 'rate-limiter', dir: join(import.meta.dirname, '..'), starterBeside: true });
await using servers = await forkServers(new URL('./servers.ts', import.meta.url), options);

const TARGETS = [
  'bare',
  'starter',
  ...(edited ? ['your code'] : []),
  'solution',
  'rate-limiter-flexible',
  'express-rate-limit',
];
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

// Each target in ROUNDS short rounds, taking turns (see inRounds): on a shared 2-core machine a ratio
// between two targets measured one after the other says more about the moment than about the targets.
// Five, so the ratio targets can take the median of five paired rounds (pairedRatio).
const ROUNDS = 5;
// At least 2 s a round: the first moments of a run (connections opening) then weigh less.
const roundSec = Math.max(2, Math.round(DURATION_SEC / ROUNDS));
console.log(`Measuring (${ROUNDS} rounds of ${roundSec} s, the targets taking turns):`);
/** When each target's first round started and its last one ended: the time its allowance grew over. */
const span = new Map<string, { from: number; to: number }>();
const track = async <T>(name: string, run: () => Promise<T>): Promise<T> => {
  const from = performance.now();
  const result = await run();
  const seen = span.get(name);
  span.set(name, { from: seen?.from ?? from, to: performance.now() });
  return result;
};
/**
 * The most a limiter of `policy` may admit to one client in `name`'s rounds. The policy bounds any
 * stretch of time T to `limit + limit × T / window`; two such stretches hold here, and the smaller
 * bound is the one that holds: the whole span from the first round to the last (idle gaps included,
 * which matters for a long window), and each round on its own, added up (which matters for a short
 * one: an allowance saved up between rounds never exceeds one burst).
 */
const allowedOver = (name: string, policy: { limit: number; windowMs: number }, rounds: LoadResult[]) => {
  const { from, to } = span.get(name)!;
  const bound = (ms: number) => policy.limit + (policy.limit * ms) / policy.windowMs;
  const perRound = rounds.reduce((total, round) => total + bound(round.durationSec * 1000), 0);
  return Math.floor(Math.min(bound(to - from), perRound));
};
/**
 * Redis commands `target`'s own clients have sent so far, counted by the clients themselves (servers.ts):
 * never Redis's server-wide counters, which count whatever else shares that Redis too.
 */
async function redisCalls(target: string): Promise<number> {
  return (await servers.stats())[`${target}.redisCalls`] ?? 0;
}

/** The servers' process's CPU time so far, in µs (servers.ts). */
async function serverCpuUs(): Promise<number> {
  return (await servers.stats()).serverCpuUs ?? 0;
}

const mainRounds = await inRounds(TARGETS, ROUNDS, async (target) => {
  const calls = await redisCalls(target);
  const cpu = await serverCpuUs();
  const result = await track(target, () =>
    runLoad({
      name: target,
      url: urlsOf(target),
      durationSec: roundSec,
      connections: CONNECTIONS,
      // A fresh API key per target: every limiter starts from a full allowance.
      headers: { 'x-api-key': `bench-${target}` },
    }),
  );
  return {
    result,
    redisCalls: (await redisCalls(target)) - calls,
    cpuUsPerRequest: ((await serverCpuUs()) - cpu) / Math.max(1, result.requests),
  };
});
const rows: TableRow[] = TARGETS.map((target) => {
  const measured = mainRounds.get(target)!;
  const result = mergeRounds(
    target,
    measured.map((m) => m.result),
  );
  const admitted = result.statusCounts['200'] ?? 0;
  const allowed = allowedOver(
    target,
    options,
    measured.map((m) => m.result),
  );
  const redisCalls = measured.reduce((total, m) => total + m.redisCalls, 0);
  return HTTP.row(target, result, {
    admitted,
    '429s': result.statusCounts['429'] ?? 0,
    allowed: target === 'bare' ? '-' : allowed,
    'over-admitted': target === 'bare' ? '-' : Math.max(0, admitted - allowed),
    'Redis calls per request': target === 'bare' ? '-' : redisCalls / result.requests,
    'server CPU per request': median(measured.map((m) => m.cpuUsPerRequest)),
  });
});

report.table('Rate limiter: three instances, one shared limit', {
  columns: [
    ...HTTP.columns,
    { name: 'admitted' },
    { name: '429s' },
    { name: 'allowed' },
    { name: 'over-admitted' },
    { name: 'Redis calls per request' },
    { name: 'server CPU per request', unit: 'µs' },
  ],
  rows,
  lesson: 'over-admitted',
});
/** Each round's results of a target in the main table. */
const roundsOf = (target: string) => mainRounds.get(target)!.map((m) => m.result);
/** Prints one pair's per-round ratios, so a reader sees how much the rounds agreed. */
const ratioOf = (a: (LoadResult | number)[], b: (LoadResult | number)[]) => {
  const { median, each } = pairedRatio(a, b);
  console.log(`  rounds: ${each.map((r) => r.toFixed(2)).join(', ')}; median ${median.toFixed(2)}`);
  return median;
};
// Ratios are medians of the rounds taken in turns (see pairedRatio): one slow moment spoils one pair.
// Against the libraries a team could install, targets (issue #25): at least 1.0x each one's req/s, with
// a p99 no worse. Each library makes one script call per request; the solution makes one per client per
// turn of the event loop (the table's last column), which is where it wins. While every limiter made a
// call per request this was a coin toss on a shared 2-core machine (0.82x to 1.18x), and the targets
// were figures; the README ("Where the main table's time goes") has the measurements per design.
// Against the bare API the round trips are CPU on the cores the load generator, the servers and Redis
// share: how busy the machine was, so that ratio stays a figure.
for (const library of ['rate-limiter-flexible', 'express-rate-limit']) {
  report.target(
    `solution ÷ ${library} req/s (median of rounds)`,
    ratioOf(roundsOf('solution'), roundsOf(library)),
    { atLeast: 1 },
    'x',
  );
  // The p99s too, round by round: a limiter that won on req/s by making some requests wait would not count.
  const p99s = (name: string) => roundsOf(name).map((round) => Math.max(round.p99Ms, 0.001));
  report.target(
    `solution p99 ÷ ${library} p99 (median of rounds)`,
    ratioOf(p99s('solution'), p99s(library)),
    { atMost: 1 },
    'x',
  );
}
// What each request cost the servers' process in CPU, round by round: where the req/s ratios come from,
// and what a busy machine leaves standing when it drowns them (the README's figures per design).
const cpuOf = (name: string) => mainRounds.get(name)!.map((m) => m.cpuUsPerRequest);
for (const library of ['rate-limiter-flexible', 'express-rate-limit'])
  report.figure(
    `solution ÷ ${library} server CPU per request (median of rounds)`,
    ratioOf(cpuOf('solution'), cpuOf(library)),
    'x',
  );
report.figure('solution ÷ bare req/s (median of rounds)', ratioOf(roundsOf('solution'), roundsOf('bare')), 'x');
const solutionRow = rows[TARGETS.indexOf('solution')];
report.target('requests the solution over-admitted', Number(solutionRow?.values['over-admitted']), { exactly: 0 });

// The flood: one abusive key hammers all three instances while well-behaved clients (many keys, each far
// under its limit, a steady 300 req/s in all) keep using the API. A limiter that asks Redis about every
// denied request spends its capacity on the abuser; one that remembers a denial until its Retry-After
// answers the abuser locally. Each target's clients count their own commands: what a denial cost.
const FLOOD_CONNECTIONS = 40;
// 300 keys at 300 req/s in all: one request a second each, so none comes near 100 a minute.
const WELL_BEHAVED = { connections: 6, rate: 300, keys: 300 };

console.log(
  `Flood: one key on ${FLOOD_CONNECTIONS} connections, beside ${WELL_BEHAVED.keys} well-behaved keys at ${WELL_BEHAVED.rate} req/s:`,
);
const FLOOD_TARGETS = ['bare', 'solution', 'rate-limiter-flexible', 'express-rate-limit'];
const floodRounds = await inRounds(FLOOD_TARGETS, ROUNDS, async (name) => {
  let n = 0;
  const calls = await redisCalls(`flood-${name}`);
  const [flood, polite] = await track(`flood-${name}`, () =>
    Promise.all([
      runLoad({
        name: `${name} (flood)`,
        url: urlsOf(`flood-${name}`),
        durationSec: roundSec,
        connections: FLOOD_CONNECTIONS,
        headers: { 'x-api-key': `flood-${name}` },
      }),
      runLoad({
        name: `${name} (well-behaved)`,
        url: urlsOf(`flood-${name}`),
        durationSec: roundSec,
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
    ]),
  );
  // Every well-behaved request costs one script call; what is left was spent on the abuser.
  const spentOnFlood = Math.max(0, (await redisCalls(`flood-${name}`)) - calls - polite.requests);
  return { flood, polite, spentOnFlood };
});
const floodRows: TableRow[] = FLOOD_TARGETS.map((name) => {
  const measured = floodRounds.get(name)!;
  const flood = mergeRounds(
    `${name} (flood)`,
    measured.map((m) => m.flood),
  );
  const polite = mergeRounds(
    `${name} (well-behaved)`,
    measured.map((m) => m.polite),
  );
  const spentOnFlood = measured.reduce((total, m) => total + m.spentOnFlood, 0);
  const denied = flood.statusCounts['429'] ?? 0;
  const admitted = flood.statusCounts['200'] ?? 0;
  return HTTP.row(`${name} (flood)`, flood, {
    denied,
    'over-admitted':
      name === 'bare'
        ? '-'
        : Math.max(
            0,
            admitted -
              allowedOver(
                `flood-${name}`,
                options.flood,
                measured.map((m) => m.flood),
              ),
          ),
    'Redis calls per denial': name === 'bare' ? '-' : denied > 0 ? spentOnFlood / denied : 0,
    'well-behaved p99': polite.p99Ms,
    'well-behaved 2xx': polite.statusCounts['200'] ?? 0,
    'well-behaved 429s': polite.statusCounts['429'] ?? 0,
  });
});
report.table('Flood: one abusive key, three instances, well-behaved clients beside it', {
  columns: [
    ...HTTP.columns,
    { name: 'denied' },
    { name: 'over-admitted' },
    { name: 'Redis calls per denial' },
    { name: 'well-behaved p99', unit: 'ms', kind: 'latency' },
    { name: 'well-behaved 2xx' },
    { name: 'well-behaved 429s' },
  ],
  rows: floodRows,
  // What the flood is about: the libraries ask Redis about every denial, the solution about almost none.
  lesson: 'Redis calls per denial',
});
const [, solutionFlood] = floodRows;
if (solutionFlood) {
  const floodRoundsOf = (name: string) => floodRounds.get(name)!.map((m) => m.flood);
  // Against the libraries a team could install: each asks Redis about every denied request, the
  // solution remembers a denial until its Retry-After. That is the lesson, and here it decides.
  for (const library of ['rate-limiter-flexible', 'express-rate-limit']) {
    report.target(
      `solution ÷ ${library} req/s during the flood (median of rounds)`,
      ratioOf(floodRoundsOf('solution'), floodRoundsOf(library)),
      { atLeast: 1 },
      'x',
    );
    // ...with a p99 no worse: a limiter that won on req/s by making some requests wait would not count.
    const p99s = (name: string) => floodRoundsOf(name).map((round) => Math.max(round.p99Ms, 0.001));
    report.target(
      `solution p99 ÷ ${library} p99 during the flood (median of rounds)`,
      ratioOf(p99s('solution'), p99s(library)),
      { atMost: 1 },
      'x',
    );
  }
  // Against bare, a figure: both answer the abuser without Redis, so it is a close race by design, and
  // on a busy machine its rounds swung from 0.29x to 4.60x in one run (load average 42). What a denial
  // costs is counted below instead, and the libraries above are where the deny cache decides.
  report.figure(
    'solution ÷ bare req/s during the flood (median of rounds)',
    ratioOf(floodRoundsOf('solution'), floodRoundsOf('bare')),
    'x',
  );
  report.target(
    'Redis calls per denied request during the flood',
    Number(solutionFlood.values['Redis calls per denial']),
    {
      atMost: 0.1,
    },
  );
  report.target('requests the solution over-admitted during the flood', Number(solutionFlood.values['over-admitted']), {
    exactly: 0,
  });
}

const file = report.write({ options, durationSec: DURATION_SEC, connections: CONNECTIONS, rounds: ROUNDS });
console.log(`Figures written to ${file}`);
