/**
 * The servers the load script measures, in their own process (forkServers): three instances of one
 * target (the committed starter's hub, the learner's edited one as "your code", or the solution's) on one context, as three processes behind a load
 * balancer would run. stats() reports this process's memory and what the instances hold queued.
 */
import { starterEdited, starterVersions } from '@labs/bench';
import { openLab } from '@labs/lab-kit';
import { stopServices } from '@labs/services';
import type { GatewayStats } from '../server/gateway.ts';
import roomsLab from '../server/lab.ts';
import { createRoomHub as solutionHub } from '../solution/room-hub.ts';

/** The learner's file: when they have edited it, it runs as "your code" beside the committed starter. */
const STARTER = new URL('../src/room-hub.ts', import.meta.url);

/** The targets in the order the table shows them. */
export const TARGETS: readonly string[] = ['starter', ...(starterEdited(STARTER) ? ['your code'] : []), 'solution'];

/** The hub `target` names: the solution's, or one version of the learner's file. */
async function hubOf(target: string) {
  if (target === 'solution') return solutionHub;
  const versions = await starterVersions(
    STARTER,
    (url) => import(url.href) as Promise<typeof import('../src/room-hub.ts')>,
  );
  const version = versions.find((v) => v.name === target);
  if (!version) throw new Error(`no room hub is measured as "${target}"`);
  return version.module.createRoomHub;
}

export interface BenchServerOptions {
  /** One of TARGETS. */
  target: string;
  instances: number;
  tokenSecret: string;
  sendBufferCap: number;
}

export async function start(options: BenchServerOptions) {
  const lab = await openLab(roomsLab, { purpose: 'bench' });
  const createHub = await hubOf(options.target);
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
