/**
 * Network distance for a lab's services: latency proxies in front of them, and the environment that
 * points a server at the proxies instead. A load script calls {@link withDistance} (the proxies run in a
 * process of their own, so neither the load generator nor the servers lend them their event loop);
 * `lab serve --latency` calls {@link openDistance} (the proxies run in the command line's process).
 */
import { SERVICE_KINDS, SERVICES, type ServiceInfo, type ServiceKind } from '@labs/services';
import type { DistanceRecord } from './table.ts';
import { forkServers } from './servers.ts';
import {
  describeOverhead,
  measureProxyOverhead,
  proxiedUrl,
  serviceAddress,
  startLatencyProxy,
  type LatencyProxy,
  type LatencyProxyStats,
  type ProxyOverhead,
} from './latency-proxy.ts';

/** A service a latency proxy can stand in front of: one whose clients take a URL (SERVICES[kind].schemes). */
export type ProxiableService = Exclude<ServiceKind, 'kafka'>;

/**
 * What the proxy needs of each such service (the variable that carries its URL, its names), read from
 * the one table of service facts in @labs/services.
 */
export const PROXIABLE: Readonly<Record<ProxiableService, ServiceInfo>> = Object.fromEntries(
  SERVICE_KINDS.filter((k) => Object.keys(SERVICES[k].schemes).length > 0).map((k) => [k, SERVICES[k]]),
) as Record<ProxiableService, ServiceInfo>;

/** How far one service is: milliseconds each way, or that with jitter. */
export type ServiceDistance = number | { latencyMs: number; jitterMs?: number };

/** How far each service is, e.g. `{ postgres: 1, redis: 0.5 }` (milliseconds each way). */
export type Distances = Partial<Record<ProxiableService, ServiceDistance>>;

/** A `--latency` value or a distance that makes no sense; its message is meant for the learner as is. */
export class DistanceError extends Error {
  override readonly name = 'DistanceError';
}

const isProxiable = (name: string): name is ProxiableService => Object.hasOwn(PROXIABLE, name);

const normalise = (d: ServiceDistance) =>
  typeof d === 'number' ? { latencyMs: d, jitterMs: 0 } : { latencyMs: d.latencyMs, jitterMs: d.jitterMs ?? 0 };

const entriesOf = (distances: Distances) =>
  Object.entries(distances).map(([kind, d]) => {
    if (!isProxiable(kind)) throw new DistanceError(unknownService(kind));
    const { latencyMs, jitterMs } = normalise(d as ServiceDistance);
    if (!Number.isFinite(latencyMs) || latencyMs < 0 || !Number.isFinite(jitterMs) || jitterMs < 0) {
      throw new DistanceError(`${kind}: latency and jitter must be 0 or more milliseconds.`);
    }
    return { kind, latencyMs, jitterMs };
  });

function unknownService(name: string): string {
  const known = Object.keys(PROXIABLE).join(', ');
  return name === 'kafka'
    ? `kafka cannot be put behind the latency proxy: a Kafka client connects to the address each broker advertises, which would bypass it. Services that can: ${known}.`
    : `unknown service "${name}"; the latency proxy stands in front of: ${known}.`;
}

const MS = /^(\d+(?:\.\d+)?)\s*(ms|s|us|µs)?$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, us: 0.001, µs: 0.001 };
const MAX_MS = 10_000;

function parseMs(raw: string, what: string): number {
  const match = MS.exec(raw.trim());
  const value = match ? Number(match[1]) * (UNIT_MS[match[2] ?? 'ms'] ?? 1) : Number.NaN;
  if (!Number.isFinite(value) || value > MAX_MS) {
    throw new DistanceError(`${what} must be a duration such as 1ms, 0.5ms or 250us (at most 10s), got "${raw}".`);
  }
  return value;
}

/**
 * Reads a `--latency` value: `postgres=1ms,redis=0.5ms`, each optionally with jitter (`postgres=1ms~0.2ms`).
 * A bare number is milliseconds. Throws a {@link DistanceError} naming what is wrong.
 */
export function parseDistances(text: string): Distances {
  const distances: Distances = {};
  const parts = text
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  if (parts.length === 0)
    throw new DistanceError('--latency needs service=duration pairs, e.g. postgres=1ms,redis=0.5ms.');
  for (const part of parts) {
    const [name, value, extra] = part.split('=').map((s) => s.trim());
    if (!name || value === undefined || value === '' || extra !== undefined) {
      throw new DistanceError(`"${part}" is not service=duration (e.g. postgres=1ms).`);
    }
    if (!isProxiable(name)) throw new DistanceError(unknownService(name));
    if (distances[name] !== undefined) throw new DistanceError(`${name} is given twice.`);
    const [latency = '', jitter] = value.split('~');
    distances[name] = {
      latencyMs: parseMs(latency, `${name}'s latency`),
      jitterMs: jitter === undefined ? 0 : parseMs(jitter, `${name}'s jitter`),
    };
  }
  return distances;
}

const fmtMs = (ms: number) => `${Number(ms.toFixed(3))} ms`;

/** The row-label suffix for `distances`: "(db 1 ms away)", "(db 1 ms, redis 0.5 ms away)", "(loopback)". */
export function distanceLabel(distances: Distances): string {
  const parts = entriesOf(distances)
    .filter((e) => e.latencyMs > 0 || e.jitterMs > 0)
    .map((e) => `${PROXIABLE[e.kind].short} ${fmtMs(e.latencyMs)}${e.jitterMs > 0 ? ` ±${fmtMs(e.jitterMs)}` : ''}`);
  return parts.length === 0 ? '(loopback)' : `(${parts.join(', ')} away)`;
}

/** One line per service saying what distance is simulated. */
function describeDistances(distances: Distances): string[] {
  return entriesOf(distances).map(
    (e) =>
      `Simulated distance: ${PROXIABLE[e.kind].title} ${fmtMs(e.latencyMs)} away (+${fmtMs(e.latencyMs)} each way, +${fmtMs(2 * e.latencyMs)} per round trip${e.jitterMs > 0 ? `, ±${fmtMs(e.jitterMs)} jitter` : ''}) through a latency proxy on 127.0.0.1`,
  );
}

/** Services at a distance: the environment to hand a server, and what was simulated and measured. */
export interface Distance extends AsyncDisposable {
  /** `REDIS_URL`, `DATABASE_URL`, `AMQP_URL` pointing at the proxies (empty at loopback). */
  readonly env: Record<string, string>;
  /** The row-label suffix, e.g. "(db 1 ms away)". */
  readonly label: string;
  readonly distances: Distances;
  /** The proxy's own cost per round trip, measured as the proxies started (absent at loopback). */
  readonly overhead: ProxyOverhead | undefined;
  /** What the report shows of it (absent at loopback); `applied()` fills in the delay really applied. */
  readonly record?: DistanceRecord;
  /** Lines to print before a run: what distance is simulated, and the proxy's own cost. */
  describe(): string[];
  /** Lines to print after a run: the delay each proxy actually applied (timers round up). */
  applied(): Promise<string[]>;
  /**
   * Each proxy's counters so far (none at loopback). Its upstream chunks are the messages clients sent
   * and waited on one at a time: a count of round trips that only this run's connections add to.
   */
  stats(): Promise<Partial<Record<ProxiableService, LatencyProxyStats>>>;
  close(): Promise<void>;
}

const LOOPBACK = 'Services at loopback (no latency proxy).';

/** A {@link Distance} whose proxies run in this process. */
export interface LocalDistance extends Distance {
  readonly proxies: ReadonlyMap<ProxiableService, LatencyProxy>;
}

function urlFrom(env: NodeJS.ProcessEnv, kind: ProxiableService): string {
  const { envVar, title } = PROXIABLE[kind];
  const url = env[envVar];
  if (!url) {
    throw new DistanceError(
      `${title} cannot be put at a distance: ${envVar} is not set. Run the script through \`lab bench\` (or \`lab serve\`), which finds the services and sets it.`,
    );
  }
  return url;
}

/** Mean delay over both directions, in milliseconds. */
const meanDelayMs = ({ upstream, downstream }: LatencyProxyStats) => {
  const chunks = upstream.chunks + downstream.chunks;
  return chunks === 0
    ? 0
    : (upstream.meanDelayMs * upstream.chunks + downstream.meanDelayMs * downstream.chunks) / chunks;
};

const appliedLine = (kind: ProxiableService, stats: LatencyProxyStats) =>
  `${PROXIABLE[kind].title} proxy: ${stats.accepted} connections, ${stats.upstream.chunks + stats.downstream.chunks} chunks held ${fmtMs(meanDelayMs(stats))} on average each way (never less than stated; more where timers or a busy CPU run late)`;

/**
 * Starts latency proxies in this process in front of the services in `env` (the URLs `lab` resolved),
 * and returns the environment that points at them. Measures the proxy's own cost first.
 */
export async function openDistance(distances: Distances, env: NodeJS.ProcessEnv = process.env): Promise<LocalDistance> {
  const entries = entriesOf(distances);
  const proxies = new Map<ProxiableService, LatencyProxy>();
  const overrides: Record<string, string> = {};
  const close = async () => {
    await Promise.all([...proxies.values()].map((p) => p.close()));
  };
  try {
    for (const { kind, latencyMs, jitterMs } of entries) {
      const url = urlFrom(env, kind);
      const proxy = await startLatencyProxy({ target: serviceAddress(url), latencyMs, jitterMs });
      proxies.set(kind, proxy);
      overrides[PROXIABLE[kind].envVar] = proxiedUrl(url, proxy);
    }
  } catch (error) {
    await close();
    throw error;
  }
  const overhead = entries.length > 0 ? await measureProxyOverhead() : undefined;
  return {
    env: overrides,
    label: distanceLabel(distances),
    distances,
    overhead,
    proxies,
    describe() {
      if (entries.length === 0) return [LOOPBACK];
      return [...describeDistances(distances), ...(overhead ? [describeOverhead(overhead)] : [])];
    },
    async applied() {
      return [...proxies].filter(([, p]) => p.stats().accepted > 0).map(([kind, p]) => appliedLine(kind, p.stats()));
    },
    async stats() {
      return Object.fromEntries([...proxies].map(([kind, p]) => [kind, p.stats()]));
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** What the proxy process's stats() flattens each proxy's figures into (see distance-servers.ts). */
export function flattenStats(kind: ProxiableService, stats: LatencyProxyStats): Record<string, number> {
  return {
    [`${kind}.accepted`]: stats.accepted,
    [`${kind}.refused`]: stats.refused,
    [`${kind}.open`]: stats.open,
    [`${kind}.upstream.chunks`]: stats.upstream.chunks,
    [`${kind}.upstream.bytes`]: stats.upstream.bytes,
    [`${kind}.upstream.meanDelayMs`]: stats.upstream.meanDelayMs,
    [`${kind}.downstream.chunks`]: stats.downstream.chunks,
    [`${kind}.downstream.bytes`]: stats.downstream.bytes,
    [`${kind}.downstream.meanDelayMs`]: stats.downstream.meanDelayMs,
  };
}

function unflattenStats(kind: ProxiableService, flat: Record<string, number>): LatencyProxyStats {
  const n = (key: string) => flat[`${kind}.${key}`] ?? 0;
  const direction = (d: string) => ({
    chunks: n(`${d}.chunks`),
    bytes: n(`${d}.bytes`),
    meanDelayMs: n(`${d}.meanDelayMs`),
  });
  return {
    accepted: n('accepted'),
    refused: n('refused'),
    open: n('open'),
    upstream: direction('upstream'),
    downstream: direction('downstream'),
  };
}

/**
 * Puts services at a distance for a load script: starts a latency proxy per service in a process of its
 * own, in front of the URL in the service's variable (which `lab bench` sets), and returns the
 * environment for {@link forkServers} and a row-label suffix. `withDistance({})` is loopback: no proxy,
 * no overrides, label "(loopback)".
 *
 * ```ts
 * await using far = await withDistance({ postgres: 1 }); // 1 ms each way
 * for (const line of far.describe()) console.log(line);
 * await using servers = await forkServers(new URL('./servers.ts', import.meta.url), options, { env: far.env });
 * rows.push({ name: `solution ${far.label}`, result: await runLoad({ ... }), evidence });
 * ```
 */
export async function withDistance(distances: Distances): Promise<Distance> {
  const entries = entriesOf(distances);
  const label = distanceLabel(distances);
  if (entries.length === 0) {
    const close = async () => {};
    return {
      env: {},
      label,
      distances,
      overhead: undefined,
      describe: () => [LOOPBACK],
      applied: async () => [],
      stats: async () => ({}),
      close,
      [Symbol.asyncDispose]: close,
    };
  }
  const targets = entries.map((e) => ({ ...e, url: urlFrom(process.env, e.kind) }));
  const proxyProcess = await forkServers(new URL('./distance-servers.ts', import.meta.url), { targets });
  const env: Record<string, string> = {};
  for (const { kind } of entries) {
    const url = proxyProcess.urls[kind];
    if (url) env[PROXIABLE[kind].envVar] = url;
  }
  const initial = await proxyProcess.stats();
  const overhead: ProxyOverhead = {
    roundTrips: initial['overhead.roundTrips'] ?? 0,
    directUs: initial['overhead.directUs'] ?? 0,
    proxiedUs: initial['overhead.proxiedUs'] ?? 0,
    overheadUs: initial['overhead.overheadUs'] ?? 0,
  };
  // For the report (Report.distance): how far the services were and what the proxy cost.
  const record: DistanceRecord = {
    label,
    services: Object.fromEntries(
      entries.map(({ kind, latencyMs, jitterMs }) => [kind, { latencyMs, jitterMs, appliedMeanDelayMs: null }]),
    ),
    proxyOverheadUs: overhead.overheadUs,
  };
  const applied = async () => {
    const flat = await proxyProcess.stats();
    const lines: string[] = [];
    for (const { kind } of entries) {
      const stats = unflattenStats(kind, flat);
      if (stats.accepted === 0) continue;
      const service = record.services[kind];
      if (service) service.appliedMeanDelayMs = meanDelayMs(stats);
      lines.push(appliedLine(kind, stats));
    }
    return lines;
  };
  const close = async () => {
    await applied().catch(() => undefined);
    await proxyProcess.close();
  };
  return {
    env,
    label,
    distances,
    overhead,
    record,
    describe: () => [...describeDistances(distances), describeOverhead(overhead)],
    applied,
    stats: async () => {
      const flat = await proxyProcess.stats();
      return Object.fromEntries(entries.map(({ kind }) => [kind, unflattenStats(kind, flat)]));
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
