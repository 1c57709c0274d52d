/**
 * The HTML report, opened in headless Chromium (Debian's `chromium`, or CHROMIUM_PATH): the charts must
 * have drawn, not only the file exist. The page gets a small probe script that writes what it finds into
 * the DOM, and Chromium's --dump-dom hands the DOM back. Without a browser that test is skipped, and its
 * title says why: a learner need not install one to run the kit's tests.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { lessonOf } from '../src/html-report.ts';
import { createReport, HTTP, JOBS } from '../src/index.ts';
import { fakeRow } from './fixtures/rows.ts';

const run = promisify(execFile);
const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find(
  (path): path is string => !!path && existsSync(path),
);

const work = mkdtempSync(join(tmpdir(), 'bench-report-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Runs in the page once it has loaded: what each canvas holds, and any error the page threw. */
const PROBE = `<script>
window.addEventListener('error', (e) => (window.__errors = [...(window.__errors ?? []), String(e.message)]));
window.addEventListener('load', () => {
  const canvases = [...document.querySelectorAll('canvas')].map((canvas) => {
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
    const chart = Chart.getChart(canvas);
    const bars = chart ? chart.data.datasets.reduce((n, _, i) => n + chart.getDatasetMeta(i).data.length, 0) : 0;
    return { id: canvas.id, pixels: canvas.width * canvas.height, painted, bars };
  });
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({ canvases, errors: window.__errors ?? [] });
  document.body.append(out);
});
</script>`;

interface Probe {
  canvases: { id: string; pixels: number; painted: number; bars: number }[];
  errors: string[];
}

/** Opens `htmlFile` (with the probe added) in headless Chromium and returns what the probe found. */
async function openInChromium(browser: string, htmlFile: string): Promise<Probe> {
  const probed = htmlFile.replace(/\.html$/, '.probed.html');
  // The probe goes first, so it sees errors thrown by the report's own scripts.
  writeFileSync(probed, readFileSync(htmlFile, 'utf8').replace('<head>', `<head>${PROBE}`));
  const { stdout } = await run(
    browser,
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
      `--user-data-dir=${mkdtempSync(join(work, 'profile-'))}`,
      '--window-size=1280,1600',
      // No host resolves: a report that needed the network would fail to draw.
      '--host-resolver-rules=MAP * ~NOTFOUND',
      '--dump-dom',
      pathToFileURL(probed).href,
    ],
    { timeout: 60_000, maxBuffer: 32 * 1024 * 1024 },
  );
  const match = /<pre id="probe">([^<]*)<\/pre>/.exec(stdout);
  if (!match?.[1]) throw new Error(`the probe wrote nothing; Chromium returned:\n${stdout.slice(0, 2000)}`);
  return JSON.parse(match[1].replaceAll('&quot;', '"').replaceAll('&amp;', '&')) as Probe;
}

/** A report as a load script writes it: an HTTP table, a jobs table, three targets, a figure. */
function writeReport(): string {
  const report = createReport({ lab: 'report-test', dir: work, out: () => {}, check: false });
  const rows = [
    fakeRow('starter (loopback)', 1709, 20, 41, { 'queries/request': 101 }),
    fakeRow('solution (loopback)', 11_000, 0.31, 0.9, { 'queries/request': 2 }),
    fakeRow('starter (db 1 ms away)', 190, 240, 300, { 'queries/request': 101 }),
    fakeRow('solution (db 1 ms away)', 2600, 15, 22, { 'queries/request': 2 }),
  ];
  report.table('N+1 <at> N = 100', { columns: [...HTTP.columns, { name: 'queries/request' }], rows });
  report.table('Jobs, not requests', {
    columns: [...JOBS.columns, { name: 'lost' }],
    rows: [
      JOBS.row('starter', { perSec: 40, p50Ms: 12, p99Ms: 30, failed: 0 }, { lost: 7 }),
      JOBS.row('solution', { perSec: 38, p50Ms: 13, p99Ms: 31, failed: 0 }, { lost: 0 }),
    ],
    lesson: 'lost',
  });
  report.target('solution ÷ starter req/s (db 1 ms away)', 2600 / 190, { atLeast: 10 }, 'x');
  report.target('solution p50 ÷ starter p50', 15 / 240, { atMost: 0.1 });
  report.target('a target whose figure could not be measured', Number.NaN, { exactly: 0 });
  report.figure('a figure that is not a goal', 1.5, 'x');
  return report.write({ durationSec: 5, connections: 32 }).replace(/\.json$/, '.html');
}

describe('HTML report', () => {
  const html = writeReport();

  it('is one file that needs no network: the charting library is inlined, nothing is fetched', () => {
    const page = readFileSync(html, 'utf8');
    expect(page).toContain('Chart.js v4');
    // Nothing to fetch: no external script, stylesheet, font or image (boolean, so a failure prints no page).
    expect(/<script[^>]+src=|<link[^>]+href=|<img|@import|url\(/.test(page)).toBe(false);
    expect(page).toContain('N+1 &lt;at&gt; N = 100'); // titles are escaped, not markup
    expect(page).toMatch(/✗ missed/);
    expect(page).toMatch(/2 CPUs|\d+ CPUs/);
  });

  it('records each target with its figure, threshold and whether it was met in the JSON', () => {
    const json = JSON.parse(readFileSync(html.replace(/\.html$/, '.json'), 'utf8'));
    expect(json.targets).toEqual([
      expect.objectContaining({ figure: 2600 / 190, comparison: 'at least', threshold: 10, met: true }),
      expect.objectContaining({ figure: 15 / 240, comparison: 'at most', threshold: 0.1, met: true }),
      // Nothing measured is a miss, said as such: never a figure of NaN written as null and passed over.
      expect.objectContaining({ name: 'a target whose figure could not be measured', figure: null, met: false }),
    ]);
    expect(json.machine).toEqual(expect.objectContaining({ cpus: expect.any(Number), node: process.version }));
    // A figure without a threshold is recorded beside the targets, and never counts as one.
    expect(json.figures).toEqual([{ name: 'a figure that is not a goal', figure: 1.5, unit: 'x' }]);
    expect(readFileSync(html, 'utf8')).toMatch(/<h2>Figures<\/h2>[\s\S]*a figure that is not a goal/);
  });

  it("opens each table with the lesson's own figure, before throughput", () => {
    const page = readFileSync(html, 'utf8');
    const canvases = (i: number) =>
      [...page.matchAll(new RegExp(`<canvas id="([a-z0-9]+)-${i}"`, 'g'))].map((m) => m[1]);
    expect(canvases(0)).toEqual(['lesson', 'rate0', 'latency']);
    expect(canvases(1)).toEqual(['lesson', 'rate0', 'latency']);
    const table = (values: Record<string, string | number>[], lesson?: string) => ({
      columns: [...HTTP.columns, { name: 'a' }, { name: 'b' }],
      rows: values.map((v, i) => fakeRow(`row ${i}`, 1, 1, 1, v)),
      ...(lesson ? { lesson } : {}),
    });
    // The named column wins; else the first evidence column with figures; none without figures.
    expect(lessonOf(table([{ a: 1, b: 2 }], 'b'))).toBe('b');
    expect(
      lessonOf(
        table([
          { a: '-', b: 2 },
          { a: '-', b: 3 },
        ]),
      ),
    ).toBe('b');
    expect(lessonOf(table([{ a: '-' }]))).toBeUndefined();
  });

  it('says what a rate counts and shows sub-millisecond latencies', () => {
    const page = readFileSync(html, 'utf8');
    expect(page).toContain('<th>jobs/s</th>');
    expect(page).toContain('<th>done p50 ms</th>');
    // The jobs table says jobs/s: req/s appears in the HTTP table's header only.
    expect(page.split('<th>req/s</th>').length - 1).toBe(1);
    expect(page).toContain('<td>0.31</td>'); // not "0.3" or "0"
  });

  // Skipped, with the reason in its title, where no browser is installed (a learner's laptop, a CI
  // image without chromium): the other tests above still check the page itself.
  if (!CHROMIUM) {
    it.skip('renders in headless Chromium (not run: no chromium found; set CHROMIUM_PATH or apt-get install chromium)', () => {});
    return;
  }

  it('renders in headless Chromium: every chart drew its bars', async () => {
    const probe = await openInChromium(CHROMIUM, html);
    expect(probe.errors).toEqual([]);
    // Three charts per table, the lesson's figure first (one bar per row), then the rate (one bar per row)
    // and latency (p50 and p99 per row).
    expect(probe.canvases.map((c) => [c.id, c.bars])).toEqual([
      ['lesson-0', 4],
      ['rate0-0', 4],
      ['latency-0', 8],
      ['lesson-1', 2],
      ['rate0-1', 2],
      ['latency-1', 4],
    ]);
    for (const canvas of probe.canvases) {
      // Axes, labels and bars: a drawn chart paints a real share of its canvas; a blank one paints none.
      expect(canvas.painted, canvas.id).toBeGreaterThan(canvas.pixels * 0.01);
    }
  });
});
