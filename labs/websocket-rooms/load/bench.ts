/**
 * Load script: starter and solution side by side in one table. Replace the evidence column with the
 * lab's own figure (over-admitted requests, queries per request, lost messages...).
 */
import { join } from 'node:path';
import { benchDurationSec, type ComparisonRow, forkServers, printComparison, runLoad, writeResults } from '@labs/bench';

const DURATION_SEC = benchDurationSec(3);
const CONNECTIONS = 20;
await using servers = await forkServers(new URL('./servers.ts', import.meta.url));
const rows: ComparisonRow[] = [];
for (const [name, url] of Object.entries(servers.urls)) {
  const result = await runLoad({
    name,
    url: `${url}/api/words?text=one%20%20two`,
    durationSec: DURATION_SEC,
    connections: CONNECTIONS,
  });
  rows.push({ name, result, evidence: { '2xx': result.statusCounts['200'] ?? 0 } });
}
printComparison('Websocket rooms: starter vs solution', rows);
console.log(`Figures written to ${writeResults(join(import.meta.dirname, '..'), 'websocket-rooms', { rows })}`);
