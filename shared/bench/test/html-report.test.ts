/**
 * The HTML report, opened in headless Chromium (Debian's `chromium`): the charts must have drawn, not
 * only the file exist. The page gets a small probe script that writes what it finds into the DOM, and
 * Chromium's --dump-dom hands the DOM back.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { lessonOf } from '../src/html-report.ts';
import { figure, printComparison, target, verdict, writeResults } from '../src/index.ts';
import { fakeRow } from './fixtures/rows.ts';

const run = promisify(execFile);
const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find(
  (path): path is string => !!path && existsSync(path),
);
const IN_CI = process.env.CI === 'true';

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

/** A report as a load script writes it: two tables, three targets. */
function writeReport(): string {
  const rows = [
    fakeRow('starter (loopback)', 1709, 20, 41, { 'queries/request': 101 }),
    fakeRow('solution (loopback)', 11_000, 3.1, 7.9, { 'queries/request': 2 }),
    fakeRow('starter (db 1 ms away)', 190, 240, 300, { 'queries/request': 101 }),
    fakeRow('solution (db 1 ms away)', 2600, 15, 22, { 'queries/request': 2 }),
  ];
  printComparison('N+1 <at> N = 100', rows);
  printComparison('A second table', rows.slice(0, 2));
  target('solution ÷ starter req/s (db 1 ms away)', 2600 / 190, { atLeast: 10 }, 'x');
  target('solution p50 ÷ starter p50', 15 / 240, { atMost: 0.1 });
  verdict(false, 'a target only described in words');
  figure('a figure that is not a goal', 1.5, 'x');
  return writeResults(work, 'report-test', { durationSec: 5, connections: 32, rows }).replace(/\.json$/, '.html');
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
      expect.objectContaining({ name: 'a target only described in words', figure: null, met: false }),
    ]);
    expect(json.machine).toEqual(expect.objectContaining({ cpus: expect.any(Number), node: process.version }));
    // A figure without a threshold is recorded beside the targets, and never counts as one.
    expect(json.figures).toEqual([{ name: 'a figure that is not a goal', figure: 1.5, unit: 'x' }]);
    expect(readFileSync(html, 'utf8')).toMatch(/<h2>Figures<\/h2>[\s\S]*a figure that is not a goal/);
  });

  it("opens each table with the lesson's own figure, before throughput", () => {
    const page = readFileSync(html, 'utf8');
    const canvases = [...page.matchAll(/<canvas id="([a-z]+)-0"/g)].map((m) => m[1]);
    expect(canvases).toEqual(['lesson', 'rps', 'latency']);
    const table = (evidence: Record<string, string | number>[], lesson?: string) => ({
      title: 't',
      rows: evidence.map((e, i) => fakeRow(`row ${i}`, 1, 1, 1, e)),
      ...(lesson ? { lesson } : {}),
    });
    // The named column wins; else the first with figures; none without figures.
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

  if (!CHROMIUM) {
    if (IN_CI) {
      it('renders in headless Chromium', () => {
        throw new Error('chromium is not installed; CI must install it (apt-get install chromium).');
      });
    } else {
      it.skip('renders in headless Chromium (skipped: no chromium here; apt-get install chromium)', () => {});
      console.warn(
        'html-report.test.ts: no chromium found, so the browser check is skipped (apt-get install chromium).',
      );
    }
    return;
  }

  it('renders in headless Chromium: every chart drew its bars', async () => {
    const probe = await openInChromium(CHROMIUM, html);
    expect(probe.errors).toEqual([]);
    // Three charts per table, the lesson's figure first (one bar per row), then req/s (one bar per row)
    // and latency (p50 and p99 per row).
    expect(probe.canvases.map((c) => [c.id, c.bars])).toEqual([
      ['lesson-0', 4],
      ['rps-0', 4],
      ['latency-0', 8],
      ['lesson-1', 2],
      ['rps-1', 2],
      ['latency-1', 4],
    ]);
    for (const canvas of probe.canvases) {
      // Axes, labels and bars: a drawn chart paints a real share of its canvas; a blank one paints none.
      expect(canvas.painted, canvas.id).toBeGreaterThan(canvas.pixels * 0.01);
    }
  });
});
