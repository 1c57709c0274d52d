/**
 * @labs/bench: what load scripts share. Servers run in a child process (forkServers), load comes from
 * autocannon (runLoad), services can be put at a network distance (withDistance), and every script
 * prints one comparison table and its targets, and writes the same as JSON and as an HTML report.
 */
export { inRounds, mergeRounds, pairedRatio, runLoad, SATURATED, type LoadOptions, type LoadResult } from './load.ts';
export { forkServers, type ForkedServers, type ForkOptions, type ServersHandle } from './servers.ts';
export {
  figure,
  printComparison,
  recordedTargets,
  target,
  verdict,
  writeResults,
  type Comparison,
  type ComparisonRow,
  type FigureRecord,
  type TargetRecord,
  type Threshold,
} from './report.ts';
export { benchDurationSec } from './settings.ts';
export {
  distanceLabel,
  withDistance,
  type Distance,
  type Distances,
  type ProxiableService,
  type ServiceDistance,
} from './distance.ts';
export {
  describeOverhead,
  measureProxyOverhead,
  proxiedUrl,
  serviceAddress,
  startLatencyProxy,
  type LatencyProxy,
  type LatencyProxyOptions,
  type LatencyProxyStats,
  type ProxyOverhead,
} from './latency-proxy.ts';
