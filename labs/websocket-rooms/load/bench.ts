/**
 * Load script: the starter's hub and the solution's, each as three instances in a child process,
 * driven by the WebSocket load generator in ./ws-load.ts. Each target runs twice: with every client
 * reading, then with one more client that joins every room and stops reading.
 *
 * The table has the bench kit's MESSAGES columns: messages delivered per second (one message to one
 * member is one delivery), publish-to-receive p50/p99, connection errors; delivered/exp. is deliveries over (messages sent x
 * members of their room). "server RSS +MB" is the child process's memory growth during the run
 * (process.memoryUsage().rss, which also moves with garbage collection); "queued MB" is the most bytes
 * the instances held in send buffers at once (the sum of ws bufferedAmount): the slow client's cost.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { benchDurationSec, createReport, forkServers, MESSAGES, type TableRow } from '@labs/bench';
import { issueToken } from '../server/token.ts';
import { type BenchServerOptions, TARGETS } from './servers.ts';
import { runWsLoad } from './ws-load.ts';

const DURATION_SEC = benchDurationSec(5);
/** What two shared cores carry with the load generator beside the servers (see the README). */
const CLIENTS = 300;
const ROOMS = 50;
const RATE = 500;
const MESSAGE_BYTES = 8192;
const SEND_BUFFER_CAP = 1024 * 1024;
const tokenSecret = randomBytes(32).toString('base64url');
const token = (user: string) => issueToken(tokenSecret, user);
const MB = (bytes: number) => Math.round((bytes / 1_048_576) * 10) / 10;

console.log(
  `WebSocket rooms load test: 3 instances per target, ${CLIENTS} clients in ${ROOMS} rooms of ${CLIENTS / ROOMS}, ` +
    `${RATE} messages/s of ${MESSAGE_BYTES / 1024} KiB, ${DURATION_SEC} s per run; send-buffer cap ${SEND_BUFFER_CAP / 1024} KiB.`,
);
// An edited src/ runs as "your code" beside the committed starter (servers.ts): rows say whose code they ran.
const report = createReport({ lab: 'websocket-rooms', dir: join(import.meta.dirname, '..'), starterBeside: true });
const rows: TableRow[] = [];
const queuedPeak: Record<string, number> = {};
for (const which of TARGETS) {
  const options: BenchServerOptions = { target: which, instances: 3, tokenSecret, sendBufferCap: SEND_BUFFER_CAP };
  await using servers = await forkServers(new URL('./servers.ts', import.meta.url), options);
  const urls = Object.values(servers.urls).map((url) => `${url.replace(/^http/, 'ws')}/ws`);
  const load = { urls, token, clients: CLIENTS, rooms: ROOMS, rate: RATE, messageBytes: MESSAGE_BYTES };
  // One short run first, so neither run is measured while V8 still compiles the code paths.
  process.stderr.write('Warming up:\n');
  await runWsLoad({ ...load, name: which, durationSec: 1, slowClient: false });
  process.stderr.write('Measuring:\n');
  for (const slowClient of [false, true]) {
    const name = `${which}${slowClient ? ' + 1 slow client' : ''}`;
    const before = await servers.stats();
    let rssPeak = before.rssBytes ?? 0;
    let queued = 0;
    const result = await runWsLoad({
      ...load,
      name,
      durationSec: DURATION_SEC,
      slowClient,
      sample: async () => {
        const now = await servers.stats();
        rssPeak = Math.max(rssPeak, now.rssBytes ?? 0);
        queued = Math.max(queued, now.queuedBytes ?? 0);
      },
    });
    queuedPeak[name] = queued;
    rows.push({
      ...MESSAGES.row(name, result, {
        clients: slowClient ? `${CLIENTS} + 1` : CLIENTS,
        'sent/s': Math.round(result.sent / result.durationSec),
        'delivered/exp.': result.expected === 0 ? 0 : Math.round((result.delivered / result.expected) * 1000) / 1000,
        'server RSS +MB': MB(rssPeak - (before.rssBytes ?? 0)),
        queued: MB(queued),
        'slow client': slowClient ? (result.slowClientEnd === '4008' ? 'closed 4008' : result.slowClientEnd) : '-',
      }),
      loadGeneratorBusy: result.loadGeneratorBusy,
    });
  }
}

report.table('WebSocket rooms: messages delivered per second, latency from publish to receive', {
  columns: [
    ...MESSAGES.columns,
    { name: 'clients' },
    { name: 'sent/s' },
    { name: 'delivered/exp.' },
    { name: 'server RSS +MB' },
    { name: 'queued', unit: 'MB' },
    { name: 'slow client' },
  ],
  rows,
  // The starter delivers a third of what it should: each instance fans out to its own members only.
  lesson: 'delivered/exp.',
});
const row = (name: string) => rows.find((r) => r.name === name);
const solution = row('solution');
const solutionSlow = row('solution + 1 slow client');
if (solution && solutionSlow) {
  report.target('solution delivered/expected', Number(solution.values['delivered/exp.']), { exactly: 1 });
  report.target(
    'solution: most bytes queued with a slow client, in MB',
    MB(queuedPeak['solution + 1 slow client'] ?? 0),
    { atMost: MB(SEND_BUFFER_CAP + 512 * 1024) },
    'MB',
  );
}
const file = report.write({
  durationSec: DURATION_SEC,
  clients: CLIENTS,
  rooms: ROOMS,
  rate: RATE,
  messageBytes: MESSAGE_BYTES,
  sendBufferCap: SEND_BUFFER_CAP,
});
console.log(`Figures written to ${file}`);
