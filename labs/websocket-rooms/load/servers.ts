/**
 * The servers the load script measures, in their own process (forkServers): three instances of one
 * target (the starter's hub or the solution's) on one context, as three processes behind a load
 * balancer would run. stats() reports this process's memory and what the instances hold queued.
 */
import { openLab } from '@labs/lab-kit';
import { stopServices } from '@labs/services';
import type { GatewayStats } from '../server/gateway.ts';
import roomsLab from '../server/lab.ts';
import { createRoomHub as solutionHub } from '../solution/room-hub.ts';
import { createRoomHub as starterHub } from '../src/room-hub.ts';

export interface BenchServerOptions {
  target: 'starter' | 'solution';
  instances: number;
  tokenSecret: string;
  sendBufferCap: number;
}

export async function start(options: BenchServerOptions) {
  const lab = await openLab(roomsLab, { purpose: 'bench' });
  const createHub = options.target === 'solution' ? solutionHub : starterHub;
  const urls: Record<string, string> = {};
  for (let i = 0; i < options.instances; i++) {
    const instance = String.fromCharCode(97 + i);
    const built = await roomsLab.build(lab.context, {
      instance,
      createHub,
      tokenSecret: options.tokenSecret,
      sendBufferCap: options.sendBufferCap,
      // A short history: the run sends thousands of 8 KiB messages, and Redis is shared.
      historyMax: 100,
    });
    urls[instance] = (await lab.context.listen(built)).url;
  }
  return {
    urls,
    async stats() {
      const gateways = await Promise.all(
        Object.values(urls).map(async (url) => (await (await fetch(`${url}/api/stats`)).json()) as GatewayStats),
      );
      const { rss, heapUsed, external } = process.memoryUsage();
      return {
        rssBytes: rss,
        heapUsedBytes: heapUsed,
        externalBytes: external,
        queuedBytes: gateways.reduce((sum, g) => sum + g.bufferedBytes, 0),
        connections: gateways.reduce((sum, g) => sum + g.connections, 0),
      };
    },
    close: () => lab.close().then(stopServices),
  };
}
