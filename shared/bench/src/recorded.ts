/**
 * What a load script's report is made of, recorded as the script prints it: each comparison table and
 * each target. writeResults() writes them all; the HTML report draws them.
 */
import type { LoadResult } from './load.ts';

/** One row: a run's figures plus the lab's own evidence columns (same keys on every row). */
export interface ComparisonRow {
  name: string;
  result: LoadResult;
  evidence: Record<string, string | number>;
}

/** One printed table. */
export interface Comparison {
  title: string;
  rows: ComparisonRow[];
  /**
   * The evidence column the lab exists for (over-admitted, stale reads, lost jobs): the report charts it
   * first. Unset: the first evidence column with figures.
   */
  lesson?: string;
}

/** A target as recorded: `figure`, `threshold` and `comparison` are null for a verdict(ok, text). */
export interface TargetRecord {
  name: string;
  figure: number | null;
  comparison: 'at least' | 'at most' | 'exactly' | null;
  threshold: number | null;
  /** What the figure counts ("x", "req/s", "ms"); empty for a plain number. */
  unit: string;
  met: boolean;
}

/** A figure recorded without a threshold: worth comparing between runs, not a goal (a loopback ratio, a bound). */
export interface FigureRecord {
  name: string;
  figure: number;
  /** What the figure counts ("x", "ms"); empty for a plain number. */
  unit: string;
}

/** A distance a script put its services at (withDistance), for the report. */
export interface DistanceRecord {
  /** The row-label suffix, e.g. "(db 1 ms away)". */
  label: string;
  /** Per service: milliseconds added each way, jitter, and the mean delay the proxy applied (once read). */
  services: Record<string, { latencyMs: number; jitterMs: number; appliedMeanDelayMs: number | null }>;
  /** What the proxy itself adds to a round trip, measured as it started, in microseconds. */
  proxyOverheadUs: number;
}

/** The tables, targets and distances recorded so far in this process, in order. */
export const recorded: {
  comparisons: Comparison[];
  targets: TargetRecord[];
  figures: FigureRecord[];
  distances: DistanceRecord[];
} = {
  comparisons: [],
  targets: [],
  figures: [],
  distances: [],
};
