/**
 * What a load script reports, gathered by one object the script creates and writes once: each table
 * (its columns declared with their units, so jobs/s or events/s are said as such, not dressed up as
 * req/s), each target with its figure and threshold, the figures recorded beside them, and the
 * distances services were put at. `write()` prints the end of the run and writes the same as JSON and
 * as a self-contained HTML report. Nothing lives in a module global: two reports in one process (a
 * test, a script measuring two things) never see each other's rows.
 *
 * ```ts
 * const report = createReport({ lab: 'n-plus-one', dir: join(import.meta.dirname, '..') });
 * report.table('N+1 at N = 100', {
 *   columns: [...HTTP.columns, { name: 'statements/request' }],
 *   rows: [HTTP.row('starter', starterResult, { 'statements/request': 101 })],
 *   lesson: 'statements/request',
 * });
 * report.target('solution ÷ starter req/s', ratio, { atLeast: 10 }, 'x');
 * report.write({ durationSec });
 * ```
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isatty } from 'node:tty';
import Table from 'cli-table3';
import picocolors from 'picocolors';
import type { Distance } from './distance.ts';
import { renderHtmlReport } from './html-report.ts';
import { type LoadResult, SATURATED } from './load.ts';
import {
  type Column,
  cellText,
  type FigureRecord,
  figureText,
  header,
  type ReportTable,
  type TableRow,
  type TargetRecord,
  type Threshold,
  type Value,
} from './table.ts';

export type {
  Column,
  DistanceRecord,
  FigureRecord,
  ReportTable,
  TableRow,
  TargetRecord,
  Threshold,
  Value,
} from './table.ts';
import { machineInfo } from './machine.ts';

/**
 * A throughput-and-latency preset: the four columns every load of one kind shares, and a row from the
 * figures one run measured.
 */
export interface Preset<Figures> {
  readonly columns: readonly Column[];
  /** A row of `name`: this preset's four columns from `figures`, then the lab's own `evidence`. */
  row(name: string, figures: Figures, evidence?: Record<string, Value>): TableRow;
}

/** What a non-HTTP run measured: how many things per second, how long each took, how many failed. */
export interface RateFigures {
  perSec: number;
  p50Ms: number;
  p99Ms: number;
  failed: number;
}

function preset(rate: string, latency: string, failed: string): Preset<RateFigures> {
  const p50 = `${latency} p50`;
  const p99 = `${latency} p99`;
  return {
    columns: [
      { name: rate, unit: rate, kind: 'rate' },
      { name: p50, unit: 'ms', kind: 'latency' },
      { name: p99, unit: 'ms', kind: 'latency' },
      { name: failed, kind: 'failures' },
    ],
    row: (name, f, evidence = {}) => ({
      name,
      values: { [rate]: f.perSec, [p50]: f.p50Ms, [p99]: f.p99Ms, [failed]: f.failed, ...evidence },
    }),
  };
}

/** HTTP load from runLoad: req/s, p50 and p99 of every response (sub-millisecond), connection errors. */
export const HTTP: Preset<LoadResult> = {
  columns: [
    { name: 'req/s', unit: 'req/s', kind: 'rate' },
    { name: 'p50', unit: 'ms', kind: 'latency' },
    { name: 'p99', unit: 'ms', kind: 'latency' },
    { name: 'errors', kind: 'failures' },
  ],
  row: (name, r, evidence = {}) => ({
    name,
    values: { 'req/s': r.rps, p50: r.p50Ms, p99: r.p99Ms, errors: r.errors, ...evidence },
    loadGeneratorBusy: r.loadGeneratorBusy,
  }),
};
/** Background jobs: jobs finished per second, enqueue-to-done time, jobs that failed. */
export const JOBS: Preset<RateFigures> = preset('jobs/s', 'done', 'failed');
/** An event stream: events applied per second, produce-to-apply time, events not applied. */
export const EVENTS: Preset<RateFigures> = preset('events/s', 'applied', 'not applied');
/** Messages fanned out: messages delivered per second, publish-to-receive time, messages not delivered. */
export const MESSAGES: Preset<RateFigures> = preset('messages/s', 'delivery', 'undelivered');

/** Colour for a terminal or FORCE_COLOR, never with NO_COLOR, and not merely because CI is set. */
const colour =
  !process.env.NO_COLOR &&
  (!!process.env.FORCE_COLOR?.replace(/^0$/, '') || (isatty(1) && process.env.TERM !== 'dumb'));
const pc = picocolors.createColors(colour);

/**
 * Whose code a "starter" row ran: `lab bench` sets LAB_STARTER_LABEL ("your code") when the learner has
 * edited src/, so a solved starter is never shown as the starter's figures. A script that measures the
 * committed starter beside the learner's code (starterVersions) names its rows itself.
 */
const whoseIn = (starterBeside: boolean) => (text: string) =>
  process.env.LAB_STARTER_LABEL && !starterBeside ? text.replace(/\bstarter\b/g, process.env.LAB_STARTER_LABEL) : text;

/** Where a report goes and what it is of. */
export interface ReportOptions {
  /** The lab's slug: the files are load/results/<lab>.json and .html. */
  lab: string;
  /** The lab's folder (the load script's `join(import.meta.dirname, '..')`). */
  dir: string;
  /** Where the lines go (default: stdout). */
  out?: (text: string) => void;
  /** Whether a missed target fails the process (default: `lab bench --check`, BENCH_CHECK=1). */
  check?: boolean;
  /**
   * The script measures the committed starter beside the learner's edited file (starterVersions), in
   * rows of their own: then no "starter" row is renamed "your code".
   */
  starterBeside?: boolean;
}

/** One load script's report: tables, targets, figures and distances, written once. */
export interface Report {
  /** Prints a table and keeps it for the files. Columns are declared once; a row names its values by column. */
  table(title: string, table: { columns: readonly Column[]; rows: readonly TableRow[]; lesson?: string }): void;
  /**
   * Prints a target as met or missed and keeps it with its figure and threshold. A figure that is not a
   * finite number (nothing was measured) is a missed target, said as such. Returns whether it was met.
   */
  target(name: string, figure: number, threshold: Threshold, unit?: string): boolean;
  /** Prints and keeps a figure that is worth comparing between runs but is not a goal; never fails a check. */
  figure(name: string, value: number, unit?: string): void;
  /** Keeps the distance the services were put at (withDistance's), with what the proxy applied. Returns it. */
  distance<D extends Distance>(distance: D): D;
  /** What was kept so far (for tests and for a script that prints a summary). */
  readonly tables: readonly ReportTable[];
  readonly targets: readonly TargetRecord[];
  readonly figures: readonly FigureRecord[];
  /**
   * Writes load/results/<lab>.json (with `settings`, the machine, every table, target, figure and
   * distance) and the HTML report beside it, once; says under `--check` how many targets missed, and
   * then sets a failing exit code. Returns the JSON's path.
   */
  write(settings?: Record<string, unknown>): string;
}

/** Starts a load script's report. */
export function createReport(options: ReportOptions): Report {
  const out = options.out ?? ((text: string) => process.stdout.write(text));
  const checking = options.check ?? process.env.BENCH_CHECK === '1';
  const whose = whoseIn(options.starterBeside ?? false);
  const tables: ReportTable[] = [];
  const targets: TargetRecord[] = [];
  const figures: FigureRecord[] = [];
  const distances: Distance[] = [];
  let written: string | undefined;

  const printTarget = (met: boolean, text: string) =>
    out(`${met ? pc.green('✓ target met:') : pc.red('✗ target missed:')} ${text}\n`);

  return {
    tables,
    targets,
    figures,
    table(title, { columns, rows, lesson }) {
      const named = rows.map((row) => ({ ...row, name: whose(row.name) }));
      const kept: ReportTable = {
        title: whose(title),
        columns: [...columns],
        rows: named,
        ...(lesson ? { lesson } : {}),
      };
      tables.push(kept);
      const table = new Table({
        head: ['', ...columns.map(header)],
        // cli-table3 colours by its own rules (CI counts as a terminal there): ours decide.
        style: colour ? { head: ['cyan'] } : { head: [], border: [] },
      });
      for (const row of named) table.push([row.name, ...columns.map((c) => cellText(row.values[c.name], c))]);
      out(`\n${pc.bold(kept.title)}\n${table.toString()}\n`);
      const saturated = named.filter((r) => (r.loadGeneratorBusy ?? 0) >= SATURATED).map((r) => r.name);
      if (saturated.length > 0) {
        out(
          pc.yellow(
            `Note: the load generator was saturated during: ${saturated.join(', ')}. Those rates are a floor for the server, not its ceiling.\n`,
          ),
        );
      }
    },
    target(described, measured, threshold, unit = '') {
      const name = whose(described);
      const [comparison, value] =
        'atLeast' in threshold
          ? (['at least', threshold.atLeast] as const)
          : 'atMost' in threshold
            ? (['at most', threshold.atMost] as const)
            : (['exactly', threshold.exactly] as const);
      const finite = Number.isFinite(measured);
      const met =
        finite &&
        (comparison === 'at least'
          ? measured >= value
          : comparison === 'at most'
            ? measured <= value
            : measured === value);
      const said = finite ? figureText(measured, unit) : 'not measured';
      printTarget(met, `${name}: ${said} (target: ${comparison} ${figureText(value, unit)})`);
      targets.push({ name, figure: finite ? measured : null, comparison, threshold: value, unit, met });
      return met;
    },
    figure(described, value, unit = '') {
      const name = whose(described);
      out(`${pc.cyan('· figure:')} ${name}: ${figureText(value, unit)}\n`);
      figures.push({ name, figure: value, unit });
    },
    distance(distance) {
      distances.push(distance);
      return distance;
    },
    write(settings = {}) {
      if (written) throw new Error(`the ${options.lab} report was already written to ${written}`);
      const dir = join(options.dir, 'load', 'results');
      mkdirSync(dir, { recursive: true });
      const at = new Date().toISOString();
      const machine = machineInfo();
      const records = distances.flatMap((d) => (d.record ? [d.record] : []));
      const file = join(dir, `${options.lab}.json`);
      const json = {
        lab: options.lab,
        at,
        node: process.version,
        machine,
        settings,
        distances: records,
        tables,
        targets,
        figures,
      };
      writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`);
      const html = join(dir, `${options.lab}.html`);
      writeFileSync(
        html,
        renderHtmlReport({ lab: options.lab, at, machine, tables, targets, figures, distances: records, settings }),
      );
      written = file;
      out(`Report written to ${html}\n`);
      if (checking) {
        const missed = targets.filter((t) => !t.met);
        if (targets.length === 0) out(pc.yellow('--check: this load script records no targets.\n'));
        else if (missed.length === 0) out(pc.green(`--check: all ${targets.length} targets met.\n`));
        else out(pc.red(`--check: ${missed.length} of ${targets.length} targets missed.\n`));
        if (missed.length > 0) process.exitCode = 1;
      }
      return file;
    },
  };
}
