/**
 * @labs/bench: what load scripts share. Servers run in a child process (forkServers), load comes from
 * autocannon (runLoad, with sub-millisecond latencies), services can be put at a network distance
 * (withDistance), and each script gathers its tables, targets and figures in one report (createReport)
 * that it writes once, printed and as JSON and HTML.
 */
export { inRounds, mergeRounds, pairedRatio, runLoad, SATURATED, type LoadOptions, type LoadResult } from './load.ts';
export { forkServers, type ForkedServers, type ForkOptions, type ServersHandle } from './servers.ts';
export {
  createReport,
  EVENTS,
  HTTP,
  JOBS,
  MESSAGES,
  type Column,
  type DistanceRecord,
  type FigureRecord,
  type Preset,
  type RateFigures,
  type Report,
  type ReportOptions,
  type ReportTable,
  type TableRow,
  type TargetRecord,
  type Threshold,
  type Value,
} from './report.ts';
export { benchDurationSec } from './settings.ts';
export { starterEdited, starterFiles, starterVersions, type StarterFile, type StarterVersion } from './pristine.ts';
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
