/**
 * One autocannon run with progress on stderr and the figures a comparison needs. The run also samples
 * this process's event-loop utilisation: when the load generator itself is saturated, the figures are
 * a floor for the server, not its ceiling, and the table says so.
 */
import type { EventEmitter } from 'node:events';
import { createHistogram, performance } from 'node:perf_hooks';
import autocannon from 'autocannon';

/** What to run: one URL (or several, round-robin over connections) for a fixed time. */
export interface LoadOptions {
  /** Row label in the table. */
  name: string;
  /** Target URL(s). With several, autocannon spreads connections across them. */
  url: string | string[];
  durationSec: number;
  connections: number;
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';
  headers?: Record<string, string>;
  body?: string;
  /** autocannon request sequence (setupRequest / onResponse) for varied traffic. */
  requests?: autocannon.Request[];
  /** Requests in flight per connection (HTTP pipelining). Default 1. */
  pipelining?: number;
  /** A cap on requests per second over all connections (a steady client, not a flood). */
  overallRate?: number;
  /** Print no progress line (for a second load running beside another). */
  quiet?: boolean;
}

/**
 * The figures of one run. Latencies in milliseconds, to the microsecond, over every response whatever
 * its status (autocannon's own percentiles are whole milliseconds of 2xx responses only: a 0.4 ms p50
 * would read 0, and a limiter's fast 429s would not count).
 */
export interface LoadResult {
  name: string;
  /** Responses received. */
  requests: number;
  /** Mean responses per second. */
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Connection errors and timeouts (not HTTP error statuses). */
  errors: number;
  /** Responses per HTTP status, e.g. { "200": 812, "429": 40221 }. */
  statusCounts: Record<string, number>;
  durationSec: number;
  /** Event-loop utilisation of the load generator, 0..1: near 1 means the client was the bottleneck. */
  loadGeneratorBusy: number;
}

/** Above this utilisation the load generator, not the server, limited the run. */
export const SATURATED = 0.9;

/** Runs autocannon once and returns its figures. Progress dots go to stderr, one per second. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const { name, url, durationSec, connections } = options;
  const progress = (text: string) => options.quiet || process.stderr.write(text);
  progress(`  ${name.padEnd(28)} `);
  const ticker = setInterval(() => progress('.'), 1000);
  const before = performance.eventLoopUtilization();
  const started = performance.now();
  try {
    const optional = {
      method: options.method,
      headers: options.headers,
      body: options.body,
      requests: options.requests,
      overallRate: options.overallRate,
    };
    // Every response's time, in microseconds: autocannon's tracker hands each one over as a fraction of a millisecond.
    const latencies = createHistogram();
    // Without a callback autocannon returns its tracker, an event emitter that is also the run's promise.
    const run = autocannon({
      url: url as string, // autocannon accepts an array too; its types only say string
      duration: durationSec,
      connections,
      pipelining: options.pipelining ?? 1,
      // autocannon treats a key set to undefined as a value, so pass only what was given.
      ...Object.fromEntries(Object.entries(optional).filter(([, v]) => v !== undefined)),
    }) as unknown as Promise<autocannon.Result> & EventEmitter;
    run.on('response', (_client: unknown, _status: number, _bytes: number, responseTimeMs: number) => {
      latencies.record(Math.max(1, Math.round(responseTimeMs * 1000)));
    });
    const result = await run;
    const busy = performance.eventLoopUtilization(before).utilization;
    const elapsed = (performance.now() - started) / 1000;
    const statusCounts: Record<string, number> = {};
    for (const [status, stats] of Object.entries(result.statusCodeStats ?? {})) {
      statusCounts[status] = (stats as { count: number }).count;
    }
    const requests = Object.values(statusCounts).reduce((a, b) => a + b, 0);
    progress(` ${Math.round(requests / elapsed)} req/s\n`);
    return {
      name,
      requests,
      rps: requests / elapsed,
      p50Ms: latencies.count === 0 ? 0 : latencies.percentile(50) / 1000,
      p99Ms: latencies.count === 0 ? 0 : latencies.percentile(99) / 1000,
      errors: result.errors + result.timeouts,
      statusCounts,
      durationSec: elapsed,
      loadGeneratorBusy: busy,
    };
  } finally {
    clearInterval(ticker);
  }
}

/**
 * Measures each of `names` in `rounds` short rounds, interleaved (a, b, c, a, b, c, ...), and returns
 * each name's rounds in order. On a shared machine the speed drifts: another process wakes, a core
 * throttles. Measured one after the other, whichever target ran during the slow moment loses; measured
 * in turns, every target meets the same moments, and a ratio between two of them stops depending on
 * which went first.
 */
export async function inRounds<T>(
  names: readonly string[],
  rounds: number,
  measure: (name: string, round: number) => Promise<T>,
): Promise<Map<string, T[]>> {
  const results = new Map(names.map((name) => [name, [] as T[]]));
  for (let round = 0; round < rounds; round++) {
    for (const name of names) results.get(name)!.push(await measure(name, round));
  }
  return results;
}

/**
 * One result from several rounds of the same target: requests, statuses, errors and time are summed,
 * so req/s is the whole's; p50 is the rounds' median p50 and p99 their worst (a percentile cannot be
 * added up, and the worst round is the honest bound).
 */
export function mergeRounds(name: string, rounds: readonly LoadResult[]): LoadResult {
  if (rounds.length === 0) throw new Error(`mergeRounds(${name}): no rounds`);
  const sum = (pick: (r: LoadResult) => number) => rounds.reduce((total, r) => total + pick(r), 0);
  const statusCounts: Record<string, number> = {};
  for (const round of rounds) {
    for (const [status, count] of Object.entries(round.statusCounts)) {
      statusCounts[status] = (statusCounts[status] ?? 0) + count;
    }
  }
  const p50s = rounds.map((r) => r.p50Ms).sort((a, b) => a - b);
  const requests = sum((r) => r.requests);
  const durationSec = sum((r) => r.durationSec);
  return {
    name,
    requests,
    rps: requests / durationSec,
    p50Ms: p50s[Math.floor(p50s.length / 2)]!,
    p99Ms: Math.max(...rounds.map((r) => r.p99Ms)),
    errors: sum((r) => r.errors),
    statusCounts,
    durationSec,
    loadGeneratorBusy: Math.max(...rounds.map((r) => r.loadGeneratorBusy)),
  };
}

/**
 * `a`'s req/s over `b`'s, round by round (the rounds of {@link inRounds}, so each pair ran moments
 * apart), and the median of those ratios. One slow moment spoils one pair, not the figure: a median of
 * five pairs ignores the worst two, where a ratio of the sums would carry them. A round may also be a
 * plain number (a pause, a count per second): then the numbers are compared.
 */
export function pairedRatio(
  a: readonly (LoadResult | number)[],
  b: readonly (LoadResult | number)[],
): { median: number; each: number[] } {
  if (a.length === 0 || a.length !== b.length) throw new Error(`pairedRatio: ${a.length} rounds against ${b.length}`);
  const figure = (round: LoadResult | number) => (typeof round === 'number' ? round : round.rps);
  const each = a.map((round, i) => figure(round) / figure(b[i]!));
  const sorted = [...each].sort((x, y) => x - y);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
  return { median, each };
}
