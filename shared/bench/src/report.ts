/** The comparison table every load script prints, and the JSON file with the same figures. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Table from 'cli-table3';
import pc from 'picocolors';
import { SATURATED, type LoadResult } from './load.ts';

/** One row: a run's figures plus the lab's own evidence columns (same keys on every row). */
export interface ComparisonRow {
  name: string;
  result: LoadResult;
  evidence: Record<string, string | number>;
}

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** Prints the table: req/s, p50, p99, errors, then the evidence columns; flags a saturated client. */
export function printComparison(title: string, rows: ComparisonRow[]): void {
  const evidenceKeys = [...new Set(rows.flatMap((r) => Object.keys(r.evidence)))];
  const table = new Table({
    head: ['', 'req/s', 'p50 ms', 'p99 ms', 'errors', ...evidenceKeys],
    style: { head: ['cyan'] },
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

/** Prints a target as passed or missed. Returns `ok` so a script can count misses. */
export function verdict(ok: boolean, text: string): boolean {
  process.stdout.write(`${ok ? pc.green('✓ target met:') : pc.red('✗ target missed:')} ${text}\n`);
  return ok;
}

/** Writes the figures as JSON to <labDir>/load/results/<slug>.json (git-ignored) and returns the path. */
export function writeResults(labDir: string, slug: string, data: unknown): string {
  const dir = join(labDir, 'load', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${slug}.json`);
  writeFileSync(
    file,
    `${JSON.stringify({ lab: slug, at: new Date().toISOString(), node: process.version, ...(data as object) }, null, 2)}\n`,
  );
  return file;
}
