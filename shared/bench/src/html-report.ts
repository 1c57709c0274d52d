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
import {
  type Column,
  cellText,
  type DistanceRecord,
  type FigureRecord,
  figureText,
  header,
  type ReportTable,
  type TargetRecord,
} from './table.ts';

/** Everything one report shows. */
export interface HtmlReportInput {
  lab: string;
  /** When the figures were written (ISO 8601). */
  at: string;
  machine: MachineInfo;
  tables: readonly ReportTable[];
  targets: readonly TargetRecord[];
  /** Figures recorded without a threshold. */
  figures?: readonly FigureRecord[];
  /** The distances the services were put at (none: everything ran on loopback). */
  distances: readonly DistanceRecord[];
  /** The script's settings, shown folded. */
  settings?: Record<string, unknown>;
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

/**
 * The column a table's report opens with: the one the lab names, else the first evidence (`count`)
 * column whose rows hold figures. Undefined when none has figures (throughput then comes first).
 */
export function lessonOf(table: Pick<ReportTable, 'columns' | 'rows' | 'lesson'>): string | undefined {
  const figures = (name: string) => table.rows.some((r) => typeof r.values[name] === 'number');
  if (table.lesson && figures(table.lesson)) return table.lesson;
  return table.columns.find((c) => (c.kind ?? 'count') === 'count' && figures(c.name))?.name;
}

/** The charts of one table, in the order they are shown: the lesson, then each rate, then latencies. */
function chartsOf(
  table: ReportTable,
): { id: string; title: string; unit: string; columns: Column[]; lesson: boolean }[] {
  const lesson = lessonOf(table);
  const lessonColumn = table.columns.find((c) => c.name === lesson);
  const rates = table.columns.filter((c) => c.kind === 'rate');
  const latencies = table.columns.filter((c) => c.kind === 'latency');
  return [
    ...(lessonColumn
      ? [
          {
            id: 'lesson',
            title: `${header(lessonColumn)} (the lesson)`,
            unit: lessonColumn.unit ?? '',
            columns: [lessonColumn],
            lesson: true,
          },
        ]
      : []),
    ...rates.map((c, i) => ({
      id: `rate${i}`,
      title: `${header(c)} (${c.better ?? 'more'} is better)`,
      unit: c.unit ?? '',
      columns: [c],
      lesson: false,
    })),
    ...(latencies.length > 0
      ? [{ id: 'latency', title: 'Latency in ms (less is better)', unit: 'ms', columns: latencies, lesson: false }]
      : []),
  ];
}

function tableSection(table: ReportTable, index: number): string {
  const { title, rows, columns } = table;
  const head = ['', ...columns.map(header)].map((h) => `<th>${escapeHtml(h)}</th>`);
  const body = rows.map(
    (row) =>
      `<tr><th scope="row">${escapeHtml(row.name)}</th>${columns.map((c) => `<td>${escapeHtml(cellText(row.values[c.name], c))}</td>`).join('')}</tr>`,
  );
  const saturated = rows.filter((r) => (r.loadGeneratorBusy ?? 0) >= SATURATED).map((r) => r.name);
  const height = (bars: number) => Math.max(220, rows.length * bars * 28 + 100);
  const charts = chartsOf(table).map(
    (chart) =>
      `<figure class="${chart.lesson ? 'lesson' : ''}" style="height:${height(chart.columns.length)}px"><canvas id="${chart.id}-${index}" role="img" aria-label="${escapeHtml(chart.title)}, per row"></canvas></figure>`,
  );
  return `<section>
<h2>${escapeHtml(title)}</h2>
<div class="charts">
  ${charts.join('\n  ')}
</div>
<table><thead><tr>${head.join('')}</tr></thead><tbody>${body.join('\n')}</tbody></table>
${saturated.length > 0 ? `<p class="note">The load generator was saturated during: ${escapeHtml(saturated.join(', '))}. Those rates are a floor for the server, not its ceiling.</p>` : ''}
</section>`;
}

function targetsSection(targets: readonly TargetRecord[]): string {
  if (targets.length === 0) return '<section><h2>Targets</h2><p>This load script records no targets.</p></section>';
  const figure = (t: TargetRecord, n: number | null) =>
    n === null ? '<span class="dim">not measured</span>' : escapeHtml(figureText(n, t.unit));
  const rows = targets.map(
    (t) =>
      `<tr class="${t.met ? 'met' : 'missed'}"><td>${t.met ? '✓ met' : '✗ missed'}</td><td>${escapeHtml(t.name)}</td><td>${figure(t, t.figure)}</td><td>${t.comparison} ${figure(t, t.threshold)}</td></tr>`,
  );
  return `<section><h2>Targets</h2>
<table class="targets"><thead><tr><th></th><th>target</th><th>figure</th><th>threshold</th></tr></thead><tbody>${rows.join('\n')}</tbody></table></section>`;
}

function figuresSection(figures: readonly FigureRecord[]): string {
  if (figures.length === 0) return '';
  const rows = figures.map(
    (f) => `<tr><td>${escapeHtml(f.name)}</td><td>${escapeHtml(figureText(f.figure, f.unit))}</td></tr>`,
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

function settingsSection(settings: Record<string, unknown> = {}): string {
  if (Object.keys(settings).length === 0) return '';
  return `<section><details><summary>Settings of this run</summary><pre>${escapeHtml(JSON.stringify(settings, null, 2))}</pre></details></section>`;
}

/** The figures the charts draw, as JSON that is safe inside a <script> element. */
function chartData(tables: readonly ReportTable[]): string {
  const data = tables.map((table, index) => ({
    rows: table.rows.map((r) => r.name),
    charts: chartsOf(table).map((chart) => ({
      canvas: `${chart.id}-${index}`,
      title: chart.title,
      unit: chart.unit,
      lesson: chart.lesson,
      datasets: chart.columns.map((c) => ({
        label: header(c),
        data: table.rows.map((r) => (typeof r.values[c.name] === 'number' ? r.values[c.name] : null)),
      })),
    })),
  }));
  return JSON.stringify(data).replaceAll('<', '\\u003c');
}

/** Draws every table's charts; runs in the page. Animation off: the first frame is the chart. */
const DRAW_CHARTS = `
const tables = JSON.parse(document.getElementById('chart-data').textContent);
Chart.defaults.animation = false;
Chart.defaults.font.size = 15;
const PALETTE = ['#0891b2', '#9333ea', '#2563eb', '#ea580c'];
// The naive code's bars are red in the lesson's chart: the starter's failure is what the eye meets first.
const naive = (name) => /^(starter|your code)\\b/.test(name);
// A bar of 0 would not show at all: a sliver says "measured, and zero" rather than "missing".
const minBarLength = 3;
tables.forEach((table) => {
  for (const chart of table.charts) {
    const datasets = chart.datasets.map((d, i) => ({
      ...d,
      minBarLength,
      backgroundColor: chart.lesson ? table.rows.map((name) => (naive(name) ? '#dc2626' : '#6b7280')) : PALETTE[i % PALETTE.length],
    }));
    new Chart(document.getElementById(chart.canvas), {
      type: 'bar',
      data: { labels: table.rows, datasets },
      options: {
        indexAxis: 'y',
        responsive: true,
        maintainAspectRatio: false,
        plugins: { title: { display: true, text: chart.title, font: { size: 16 } }, legend: { display: datasets.length > 1 } },
        scales: { x: { beginAtZero: true, title: { display: chart.unit !== '', text: chart.unit } } },
      },
    });
  }
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
  const { lab, at, machine, tables, targets } = input;
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
${tables.map(tableSection).join('\n')}
${targetsSection(targets)}
${figuresSection(input.figures ?? [])}
${distancesSection(input.distances)}
${machineSection(machine, at)}
${settingsSection(input.settings)}
<script type="application/json" id="chart-data">${chartData(tables)}</script>
<script>${chartJsSource()}</script>
<script>${DRAW_CHARTS}</script>
</body>
</html>
`;
}
