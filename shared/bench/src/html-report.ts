/**
 * The HTML report beside a bench's JSON: what a workshop host puts on a projector. One file that opens
 * without a network: Chart.js's UMD build is inlined from node_modules (see the catalog entry in
 * pnpm-workspace.yaml for why Chart.js), the figures are inlined as JSON, the tables are plain HTML.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { SATURATED } from './load.ts';
import type { MachineInfo } from './machine.ts';
import type { Comparison, DistanceRecord, FigureRecord, TargetRecord } from './recorded.ts';

/** Everything one report shows. */
export interface HtmlReportInput {
  lab: string;
  /** When the figures were written (ISO 8601). */
  at: string;
  machine: MachineInfo;
  comparisons: readonly Comparison[];
  targets: readonly TargetRecord[];
  /** Figures recorded without a threshold. */
  figures?: readonly FigureRecord[];
  /** The distances the services were put at (none: everything ran on loopback). */
  distances: readonly DistanceRecord[];
  /** What the script passed to writeResults: shown as its settings, less the rows already charted. */
  data: unknown;
}

let chartJs: string | undefined;

/** Chart.js's one-file browser build, ready to sit inside a <script> element. */
function chartJsSource(): string {
  if (chartJs === undefined) {
    // The package exports only its module builds; the UMD file sits beside the CommonJS one.
    const main = createRequire(import.meta.url).resolve('chart.js');
    chartJs = readFileSync(join(dirname(main), 'chart.umd.min.js'), 'utf8')
      .replace(/\/\/# sourceMappingURL=.*$/m, '')
      .replaceAll('</script', '<\\/script');
  }
  return chartJs;
}

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch] ?? ch);

const num = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

const cell = (value: string | number | undefined) =>
  typeof value === 'number' ? num(value, Number.isInteger(value) ? 0 : 2) : escapeHtml(value ?? '-');

/**
 * The evidence column a comparison's report opens with: the one the lab names, else the first whose
 * rows hold figures. Undefined when no column has figures (the req/s chart then comes first).
 */
export function lessonOf(comparison: Comparison): string | undefined {
  const keys = [...new Set(comparison.rows.flatMap((r) => Object.keys(r.evidence)))];
  const figures = (key: string) => comparison.rows.some((r) => typeof r.evidence[key] === 'number');
  if (comparison.lesson && figures(comparison.lesson)) return comparison.lesson;
  return keys.find(figures);
}

function comparisonSection(comparison: Comparison, index: number): string {
  const { title, rows } = comparison;
  const evidenceKeys = [...new Set(rows.flatMap((r) => Object.keys(r.evidence)))];
  const head = ['', 'req/s', 'p50 ms', 'p99 ms', 'errors', ...evidenceKeys].map((h) => `<th>${escapeHtml(h)}</th>`);
  const body = rows.map(
    ({ name, result, evidence }) =>
      `<tr><th scope="row">${escapeHtml(name)}</th><td>${num(result.rps)}</td><td>${num(result.p50Ms, 1)}</td><td>${num(result.p99Ms, 1)}</td><td>${num(result.errors)}</td>${evidenceKeys.map((k) => `<td>${cell(evidence[k])}</td>`).join('')}</tr>`,
  );
  const saturated = rows.filter((r) => r.result.loadGeneratorBusy >= SATURATED).map((r) => r.name);
  const barsHeight = (perRow: number) => Math.max(220, rows.length * perRow + 100);
  const lesson = lessonOf(comparison);
  return `<section>
<h2>${escapeHtml(title)}</h2>
<div class="charts">
  ${lesson === undefined ? '' : `<figure class="lesson" style="height:${barsHeight(32)}px"><canvas id="lesson-${index}" role="img" aria-label="${escapeHtml(lesson)} per row"></canvas></figure>`}
  <figure style="height:${barsHeight(32)}px"><canvas id="rps-${index}" role="img" aria-label="Requests per second per row"></canvas></figure>
  <figure style="height:${barsHeight(48)}px"><canvas id="latency-${index}" role="img" aria-label="p50 and p99 latency per row"></canvas></figure>
</div>
<table><thead><tr>${head.join('')}</tr></thead><tbody>${body.join('\n')}</tbody></table>
${saturated.length > 0 ? `<p class="note">The load generator was saturated during: ${escapeHtml(saturated.join(', '))}. Those req/s are a floor for the server, not its ceiling.</p>` : ''}
</section>`;
}

/** A figure with its unit, as the report's tables show it: "13.68x", "4 ms", "0". */
const withUnit = (n: number, unit: string) =>
  `${n.toLocaleString('en-US', { maximumFractionDigits: 2 })}${unit === 'x' ? 'x' : unit ? ` ${unit}` : ''}`;

function targetsSection(targets: readonly TargetRecord[]): string {
  if (targets.length === 0) return '<section><h2>Targets</h2><p>This load script records no targets.</p></section>';
  const figure = (t: TargetRecord, n: number | null) =>
    n === null ? '<span class="dim">in the description</span>' : escapeHtml(withUnit(n, t.unit));
  const rows = targets.map(
    (t) =>
      `<tr class="${t.met ? 'met' : 'missed'}"><td>${t.met ? '✓ met' : '✗ missed'}</td><td>${escapeHtml(t.name)}</td><td>${figure(t, t.figure)}</td><td>${t.comparison === null ? '' : `${t.comparison} ${figure(t, t.threshold)}`}</td></tr>`,
  );
  return `<section><h2>Targets</h2>
<table class="targets"><thead><tr><th></th><th>target</th><th>figure</th><th>threshold</th></tr></thead><tbody>${rows.join('\n')}</tbody></table></section>`;
}

function figuresSection(figures: readonly FigureRecord[]): string {
  if (figures.length === 0) return '';
  const rows = figures.map(
    (f) => `<tr><td>${escapeHtml(f.name)}</td><td>${escapeHtml(withUnit(f.figure, f.unit))}</td></tr>`,
  );
  return `<section><h2>Figures</h2><p>Recorded to compare runs, not goals.</p>
<table class="targets"><thead><tr><th>figure</th><th>value</th></tr></thead><tbody>${rows.join('\n')}</tbody></table></section>`;
}

function distancesSection(distances: readonly DistanceRecord[]): string {
  if (distances.length === 0) return '';
  const ms = (n: number) => `${Number(n.toFixed(3))} ms`;
  const rows = distances.flatMap((d) =>
    Object.entries(d.services).map(
      ([service, s]) =>
        `<tr><th scope="row">${escapeHtml(d.label)}</th><td>${escapeHtml(service)}</td><td>+${ms(s.latencyMs)}${s.jitterMs > 0 ? ` ±${ms(s.jitterMs)}` : ''}</td><td>${s.appliedMeanDelayMs === null ? '-' : ms(s.appliedMeanDelayMs)}</td><td>${Math.round(d.proxyOverheadUs)} µs</td></tr>`,
    ),
  );
  return `<section><h2>Network distance</h2>
<p>Rows labelled with a distance ran with a latency proxy in front of the service: each direction held at least the time below (so each round trip costs at least twice that), and on average what it applied. Rows without one ran on loopback.</p>
<table class="distances"><thead><tr><th>rows</th><th>service</th><th>each way</th><th>applied (mean)</th><th>proxy's own cost per round trip</th></tr></thead><tbody>${rows.join('\n')}</tbody></table></section>`;
}

function machineSection(machine: MachineInfo, at: string): string {
  const rows: [string, string][] = [
    ['CPUs', `${machine.cpus} (${machine.cpuModel})`],
    ['memory', `${machine.memoryGiB} GiB`],
    ['Node', machine.node],
    ['system', machine.os],
    ['measured', at],
  ];
  return `<section><h2>Machine</h2><table class="machine"><tbody>${rows.map(([k, v]) => `<tr><th scope="row">${k}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</tbody></table></section>`;
}

function settingsSection(data: unknown): string {
  if (data === null || typeof data !== 'object') return '';
  const { rows: _charted, ...settings } = data as Record<string, unknown>;
  if (Object.keys(settings).length === 0) return '';
  return `<section><details><summary>Settings of this run</summary><pre>${escapeHtml(JSON.stringify(settings, null, 2))}</pre></details></section>`;
}

/** The figures the charts draw, as JSON that is safe inside a <script> element. */
function chartData(comparisons: readonly Comparison[]): string {
  const data = comparisons.map((c) => {
    const lesson = lessonOf(c);
    return {
      lesson: lesson ?? null,
      rows: c.rows.map((r) => ({
        name: r.name,
        rps: r.result.rps,
        p50: r.result.p50Ms,
        p99: r.result.p99Ms,
        lesson: lesson !== undefined && typeof r.evidence[lesson] === 'number' ? r.evidence[lesson] : null,
      })),
    };
  });
  return JSON.stringify(data).replaceAll('<', '\\u003c');
}

/** Draws every comparison's two charts; runs in the page. Animation off: the first frame is the chart. */
const DRAW_CHARTS = `
const comparisons = JSON.parse(document.getElementById('chart-data').textContent);
Chart.defaults.animation = false;
Chart.defaults.font.size = 15;
const options = (title, unit, legend) => ({
  indexAxis: 'y',
  responsive: true,
  maintainAspectRatio: false,
  plugins: { title: { display: true, text: title, font: { size: 16 } }, legend: { display: legend } },
  scales: { x: { beginAtZero: true, title: { display: true, text: unit } } },
});
// The lesson's chart comes first, and the naive code's bars are the ones in red: the starter's failure is
// what the eye meets before throughput.
const naive = (name) => /^(starter|your code)\b/.test(name);
comparisons.forEach((comparison, i) => {
  const labels = comparison.rows.map((r) => r.name);
  if (comparison.lesson !== null) {
    new Chart(document.getElementById('lesson-' + i), {
      type: 'bar',
      data: {
        labels,
        datasets: [{
          label: comparison.lesson,
          data: comparison.rows.map((r) => r.lesson),
          backgroundColor: comparison.rows.map((r) => (naive(r.name) ? '#dc2626' : '#6b7280')),
        }],
      },
      options: options(comparison.lesson + ' (the lesson)', comparison.lesson, false),
    });
  }
  new Chart(document.getElementById('rps-' + i), {
    type: 'bar',
    data: { labels, datasets: [{ label: 'req/s', data: comparison.rows.map((r) => r.rps), backgroundColor: '#2563eb' }] },
    options: options('Requests per second (more is better)', 'req/s', false),
  });
  new Chart(document.getElementById('latency-' + i), {
    type: 'bar',
    data: {
      labels,
      datasets: [
        { label: 'p50', data: comparison.rows.map((r) => r.p50), backgroundColor: '#0891b2' },
        { label: 'p99', data: comparison.rows.map((r) => r.p99), backgroundColor: '#9333ea' },
      ],
    },
    options: options('Latency (less is better)', 'ms', true),
  });
});
`;

const STYLE = `
body { font: 18px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #111827; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; }
.summary { font-size: 1.2rem; } .dim { color: #6b7280; }
.lesson { grid-column: 1 / -1; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1.5rem; }
figure { position: relative; margin: 0; }
table { border-collapse: collapse; margin-top: 1rem; }
th, td { padding: 0.35rem 0.8rem; border-bottom: 1px solid #e5e7eb; text-align: right; }
th[scope=row], .targets td:nth-child(2), .machine td { text-align: left; }
thead th { background: #f3f4f6; }
tr.met td:first-child { color: #15803d; font-weight: 600; } tr.missed td:first-child { color: #b91c1c; font-weight: 600; }
.targets td, .targets th, .distances td, .distances th { text-align: left; }
.note { color: #92400e; }
pre { background: #f9fafb; padding: 1rem; overflow-x: auto; font-size: 0.85rem; }
`;

/** The whole report as one HTML document that needs no network to open. */
export function renderHtmlReport(input: HtmlReportInput): string {
  const { lab, at, machine, comparisons, targets } = input;
  const met = targets.filter((t) => t.met).length;
  const summary =
    targets.length === 0
      ? ''
      : `<p class="summary">${met === targets.length ? '✓' : '✗'} ${met} of ${targets.length} targets met</p>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(lab)}: load test</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeHtml(lab)}: load test</h1>
<p class="dim">${escapeHtml(at)} · ${machine.cpus} CPUs · ${machine.memoryGiB} GiB · Node ${escapeHtml(machine.node)}</p>
${summary}
${comparisons.map(comparisonSection).join('\n')}
${targetsSection(targets)}
${figuresSection(input.figures ?? [])}
${distancesSection(input.distances)}
${machineSection(machine, at)}
${settingsSection(input.data)}
<script type="application/json" id="chart-data">${chartData(comparisons)}</script>
<script>${chartJsSource()}</script>
<script>${DRAW_CHARTS}</script>
</body>
</html>
`;
}
