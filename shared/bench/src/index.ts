/**
 * @labs/bench: what load scripts share. Servers run in a child process (forkServers), load comes from
 * autocannon (runLoad), and every script prints one comparison table and writes the same as JSON.
 */
export { runLoad, SATURATED, type LoadOptions, type LoadResult } from './load.ts';
export { forkServers, type ForkedServers, type ServersHandle } from './servers.ts';
export { printComparison, verdict, writeResults, type ComparisonRow } from './report.ts';
export { benchDurationSec } from './settings.ts';
