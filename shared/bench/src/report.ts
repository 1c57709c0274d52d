/**
 * What a load script reports: the comparison table it prints, each target with its figure and whether
 * it was met, and the same figures written as JSON and as a self-contained HTML report. Tables and
 * targets are recorded as they are printed, so writeResults() (a script's last call) writes them all.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Table from 'cli-table3';
import { isatty } from 'node:tty';
import picocolors from 'picocolors';
import { renderHtmlReport } from './html-report.ts';
import { SATURATED } from './load.ts';
import { machineInfo } from './machine.ts';
import { type ComparisonRow, recorded, type TargetRecord } from './recorded.ts';

export type { Comparison, ComparisonRow, FigureRecord, TargetRecord } from './recorded.ts';

/** Colour for a terminal or FORCE_COLOR, never with NO_COLOR, and not merely because CI is set. */
const colour =
  !process.env.NO_COLOR &&
  (!!process.env.FORCE_COLOR?.replace(/^0$/, '') || (isatty(1) && process.env.TERM !== 'dumb'));
const pc = picocolors.createColors(colour);

/** A target's threshold: the figure must be at least, at most, or exactly this. */
export type Threshold = { atLeast: number } | { atMost: number } | { exactly: number };

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** A figure as people read it: whole numbers as they are, others to two decimals at most. */
const figureText = (n: number, unit = '') => {
  const text = Number.isInteger(n) ? fmt(n) : n.toLocaleString('en-US', { maximumFractionDigits: 2 });
  return unit === '' ? text : unit === 'x' ? `${text}x` : `${text} ${unit}`;
};

/**
 * Whose code a "starter" row ran: `lab bench` sets LAB_STARTER_LABEL ("your code") when the learner has
 * edited src/, so a solved starter is never shown as the starter's figures.
 */
const whose = (text: string) =>
  process.env.LAB_STARTER_LABEL ? text.replace(/\bstarter\b/g, process.env.LAB_STARTER_LABEL) : text;

/** True when `lab bench --check` runs this script: a missed target then fails the process. */
const checking = () => process.env.BENCH_CHECK === '1';

function record(target: TargetRecord): boolean {
  recorded.targets.push(target);
  if (!target.met && checking()) process.exitCode = 1;
  return target.met;
}

/**
 * Prints the table: req/s, p50, p99, errors, then the evidence columns; flags a saturated client.
 * `lesson` names the evidence column the lab exists for, which the HTML report charts first.
 */
export function printComparison(title: string, measured: ComparisonRow[], options: { lesson?: string } = {}): void {
  const rows = measured.map((row) => ({ ...row, name: whose(row.name) }));
  recorded.comparisons.push({ title, rows, ...options });
  const evidenceKeys = [...new Set(rows.flatMap((r) => Object.keys(r.evidence)))];
  const table = new Table({
    head: ['', 'req/s', 'p50 ms', 'p99 ms', 'errors', ...evidenceKeys],
    // cli-table3 colours by its own rules (CI counts as a terminal there): ours decide.
    style: colour ? { head: ['cyan'] } : { head: [], border: [] },
  });
  for (const { name, result, evidence } of rows) {
    table.push([
      name,
      fmt(result.rps),
      fmt(result.p50Ms, 1),
      fmt(result.p99Ms, 1),
      fmt(result.errors),
      ...evidenceKeys.map((k) => {
        const v = evidence[k];
        return typeof v === 'number' ? fmt(v, Number.isInteger(v) ? 0 : 2) : (v ?? '-');
      }),
    ]);
  }
  process.stdout.write(`\n${pc.bold(title)}\n${table.toString()}\n`);
  const saturated = rows.filter((r) => r.result.loadGeneratorBusy >= SATURATED).map((r) => r.name);
  if (saturated.length > 0) {
    process.stdout.write(
      pc.yellow(
        `Note: autocannon (the load generator) was saturated during: ${saturated.join(', ')}. Those req/s are a floor for the server, not its ceiling.\n`,
      ),
    );
  }
}

const printTarget = (met: boolean, text: string) =>
  process.stdout.write(`${met ? pc.green('✓ target met:') : pc.red('✗ target missed:')} ${text}\n`);

/**
 * Prints a target as met or missed and records it (name, figure, threshold, met) for the JSON and HTML
 * report. Under `lab bench --check` a miss makes the process exit non-zero. Returns whether it was met.
 *
 * ```ts
 * target('solution req/s ÷ starter req/s at N=100', solution.rps / starter.rps, { atLeast: 10 }, 'x');
 * target('stale reads', staleReads, { exactly: 0 });
 * ```
 */
export function target(described: string, figure: number, threshold: Threshold, unit = ''): boolean {
  const name = whose(described);
  const [comparison, value] =
    'atLeast' in threshold
      ? (['at least', threshold.atLeast] as const)
      : 'atMost' in threshold
        ? (['at most', threshold.atMost] as const)
        : (['exactly', threshold.exactly] as const);
  const met =
    comparison === 'at least' ? figure >= value : comparison === 'at most' ? figure <= value : figure === value;
  printTarget(met, `${name}: ${figureText(figure, unit)} (target: ${comparison} ${figureText(value, unit)})`);
  return record({ name, figure, comparison, threshold: value, unit, met });
}

/**
 * Prints and records a figure that is worth comparing between runs but is not a goal (a ratio at a
 * distance where it means little, a round-trip bound and a share of it): in the JSON and the report
 * beside the targets, never failing `--check`.
 */
export function figure(described: string, value: number, unit = ''): void {
  const name = whose(described);
  process.stdout.write(`${pc.cyan('· figure:')} ${name}: ${figureText(value, unit)}\n`);
  recorded.figures.push({ name, figure: value, unit });
}

/**
 * Prints a target as met or missed, described by `text` alone, and records it like {@link target}
 * (without a figure or threshold). Returns `ok` so a script can count misses. Prefer `target()`, which
 * records the figure and the threshold for the report.
 */
export function verdict(ok: boolean, described: string): boolean {
  const text = whose(described);
  printTarget(ok, text);
  return record({ name: text, figure: null, comparison: null, threshold: null, unit: '', met: ok });
}

/** The targets recorded so far in this process, in the order they were printed. */
export function recordedTargets(): readonly TargetRecord[] {
  return recorded.targets;
}

/**
 * Writes the figures as JSON to <labDir>/load/results/<slug>.json (git-ignored), with every target
 * recorded, the distances services were put at (withDistance) and the machine they were measured on,
 * and the same as a self-contained HTML report beside it (<slug>.html: charts of each printed table,
 * the targets, the distances, the machine). Returns the JSON's path.
 * Under `lab bench --check` it also says how many targets were missed.
 */
export function writeResults(labDir: string, slug: string, data: unknown): string {
  const dir = join(labDir, 'load', 'results');
  mkdirSync(dir, { recursive: true });
  const at = new Date().toISOString();
  const machine = machineInfo();
  const { targets, figures, distances, comparisons } = recorded;
  const file = join(dir, `${slug}.json`);
  const json = { lab: slug, at, node: process.version, machine, ...(data as object), distances, targets, figures };
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`);
  const html = join(dir, `${slug}.html`);
  writeFileSync(html, renderHtmlReport({ lab: slug, at, machine, comparisons, targets, figures, distances, data }));
  process.stdout.write(`Report written to ${html}\n`);
  if (checking()) {
    const missed = targets.filter((t) => !t.met);
    if (targets.length === 0) process.stdout.write(pc.yellow('--check: this load script records no targets.\n'));
    else if (missed.length === 0) process.stdout.write(pc.green(`--check: all ${targets.length} targets met.\n`));
    else {
      process.stdout.write(pc.red(`--check: ${missed.length} of ${targets.length} targets missed.\n`));
      process.exitCode = 1;
    }
  }
  return file;
}
