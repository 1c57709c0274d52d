/**
 * Handing services found in this process to a child process (a spec run, a lab's server or load
 * script), so the child uses exactly those and does not look, or announce, again.
 */
import { SERVICES } from './kinds.ts';
import type { ResolvedService } from './providers/types.ts';

/**
 * The environment for the child: each service's URL in its own variable (`REDIS_URL`, ...), and the
 * child pinned to it (`LABS_PROVIDER=<kind>:env`) and quiet about it (`LABS_QUIET=1`).
 *
 * An embedded engine lives in this process. With `embeddedInChild`, it is not handed over: the child is
 * pinned to `<kind>:embedded` and starts its own. Spec runs need that, because one PGlite holds one
 * database and each test file must be isolated; a server or a load script can share ours.
 */
export function childServiceEnv(
  services: readonly ResolvedService[],
  options: { embeddedInChild?: boolean } = {},
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  const pinned: string[] = [];
  for (const svc of services) {
    if (svc.provider === 'embedded' && options.embeddedInChild) {
      pinned.push(`${svc.kind}:embedded`);
      continue;
    }
    env[SERVICES[svc.kind].envVar] = svc.url;
    pinned.push(`${svc.kind}:env`);
  }
  if (pinned.length > 0) {
    env.LABS_PROVIDER = pinned.join(',');
    env.LABS_QUIET = '1';
  }
  return env;
}
