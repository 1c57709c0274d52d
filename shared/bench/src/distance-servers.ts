/**
 * The proxy process of withDistance(), started by forkServers(): latency proxies in front of the
 * services it is given, in a process of their own, so their timers are not held up by the load
 * generator's event loop or the servers'. stats() reports each proxy's figures and the proxy overhead.
 */
import { type Distances, flattenStats, openDistance, PROXIABLE, type ProxiableService } from './distance.ts';
import type { ServersHandle } from './servers.ts';

/** What withDistance() sends: each service's URL and how far it is. */
export interface DistanceServersOptions {
  targets: { kind: ProxiableService; url: string; latencyMs: number; jitterMs: number }[];
}

/** Starts the proxies; `urls` maps each service kind to its proxied URL. */
export async function start(options: DistanceServersOptions): Promise<ServersHandle> {
  const distances: Distances = {};
  const env: Record<string, string> = {};
  for (const { kind, url, latencyMs, jitterMs } of options.targets) {
    distances[kind] = { latencyMs, jitterMs };
    env[PROXIABLE[kind].envVar] = url;
  }
  const distance = await openDistance(distances, env);
  const urls: Record<string, string> = {};
  for (const { kind } of options.targets) {
    const url = distance.env[PROXIABLE[kind].envVar];
    if (url) urls[kind] = url;
  }
  return {
    urls,
    stats() {
      const figures: Record<string, number> = {};
      for (const [key, value] of Object.entries(distance.overhead ?? {})) figures[`overhead.${key}`] = value;
      for (const { kind } of options.targets) {
        const proxy = distance.proxies.get(kind);
        if (proxy) Object.assign(figures, flattenStats(kind, proxy.stats()));
      }
      return figures;
    },
    close: () => distance.close(),
  };
}
