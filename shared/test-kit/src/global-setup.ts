/**
 * Vitest global setup: resolves the services the lab's manifest lists once, before any test file runs,
 * and hands their URLs to the test workers through the environment. Servers this run started (a local
 * binary, a container) are stopped when the run ends. The embedded engine is not shared: it lives in
 * the process that uses it, so each test file starts its own. What killed runs left behind on this
 * machine's servers (databases, Redis keys under their prefixes) is removed first (leftovers.ts).
 */
import { childServiceEnv, resolveService, stopService, stopServices } from '@labs/services';
import { readLabPackage } from './lab-manifest.ts';
import { deleteLeftoverKeys, dropLeftoverDatabases } from './leftovers.ts';

export default async function setup(): Promise<() => Promise<void>> {
  const { lab } = readLabPackage(process.cwd());
  const found = [];
  for (const kind of lab.services) {
    const svc = await resolveService(kind);
    // Found, so each test file can start its own; this one would only sit idle through the run.
    if (svc.provider === 'embedded') await stopService(kind);
    // What killed runs left on this machine's server goes before this run adds its own; a sweep that
    // fails (a role that may not list or drop, a server that stalls) leaves them, and the run goes on.
    else if (kind === 'postgres') await dropLeftoverDatabases(svc.url).catch(() => []);
    else if (kind === 'redis') await deleteLeftoverKeys(svc.url).catch(() => []);
    found.push(svc);
  }
  // Workers inherit this: they use exactly what was resolved here, without printing it again.
  Object.assign(process.env, childServiceEnv(found, { embeddedInChild: true }));
  return stopServices;
}
