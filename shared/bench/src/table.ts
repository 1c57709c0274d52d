/**
 * What a report is made of, and how its figures read: the types a load script fills in and the
 * formatting the terminal table and the HTML report share, so a figure reads the same in both.
 */
/** What a cell holds: a figure, a word ("-", "none"), or nothing to show. */
export type Value = number | string | null | undefined;

/**
 * One column of a table. `unit` is said once, in the header ("p99 ms"); `kind` decides which chart
 * draws it: `rate` (throughput: events/s, req/s) and `latency` (milliseconds) each get a chart,
 * `count` columns (the default) are evidence, and the lesson's chart draws one of them; `failures` (a
 * preset's errors) are shown in the table only.
 */
export interface Column {
  name: string;
  /** What a figure in it counts: "ms", "req/s", "%"; empty for a plain count. */
  unit?: string;
  kind?: 'rate' | 'latency' | 'count' | 'failures';
  /** Which way is better, said in the chart's title: more for a rate, less for a latency, unless set. */
  better?: 'more' | 'less';
}

/** One row: its name and a value per column name. */
export interface TableRow {
  name: string;
  values: Record<string, Value>;
  /**
   * Event-loop utilisation of the load generator during the row's run (0..1), where one ran: at or
   * above the load kit's SATURATED its rate is a floor for the server, and the table says so.
   */
  loadGeneratorBusy?: number;
}

/** A table as the report keeps it. */
export interface ReportTable {
  title: string;
  columns: Column[];
  rows: TableRow[];
  /**
   * The column the lab exists for (over-admitted, stale reads, lost jobs): the HTML report charts it
   * first, the naive code's bars in red. Unset: the first `count` column with figures.
   */
  lesson?: string;
}

/** A target's threshold: the figure must be at least, at most, or exactly this. */
export type Threshold = { atLeast: number } | { atMost: number } | { exactly: number };

/** A target as recorded. */
export interface TargetRecord {
  name: string;
  /** The measured figure; null only when none could be measured (then the target is missed). */
  figure: number | null;
  comparison: 'at least' | 'at most' | 'exactly';
  threshold: number;
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

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/**
 * A value as a table cell: milliseconds to a tenth below 100 and to a hundredth below 1 (the load kit
 * measures sub-millisecond latencies, and 0.3 ms is not 0), other figures whole or to two decimals.
 */
export function cellText(value: Value, column: Column): string {
  if (typeof value === 'string') return value;
  if (value === null || value === undefined || Number.isNaN(value)) return '-';
  if (column.kind === 'latency') return fmt(value, value < 1 ? 2 : value < 100 ? 1 : 0);
  if (column.kind === 'rate') return fmt(value);
  return fmt(value, Number.isInteger(value) ? 0 : 2);
}

/** A column's header: its name, and its unit when the name does not already say it. */
export const header = (column: Column) =>
  column.unit && !column.name.endsWith(column.unit) ? `${column.name} ${column.unit}` : column.name;

/** A figure with its unit, as people read it: "13.68x", "4 ms", "0". */
export const figureText = (n: number, unit = '') => {
  const text = Number.isInteger(n) ? fmt(n) : n.toLocaleString('en-US', { maximumFractionDigits: 2 });
  return unit === '' ? text : unit === 'x' || unit === '%' ? `${text}${unit}` : `${text} ${unit}`;
};
