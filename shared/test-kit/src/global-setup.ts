/**
 * Vitest global setup: resolves the services the lab's manifest lists once, before any test file runs,
 * and hands their URLs to the test workers through the environment. Servers this run started (a local
 * binary, a container) are stopped when the run ends. The embedded engine is not shared: it lives in
 * the process that uses it, so each test file starts its own.
 */
import { SERVICES, resolveService, stopServices } from '@labs/services';
import { readLabPackage } from './lab-manifest.ts';

export default async function setup(): Promise<() => Promise<void>> {
  const { lab } = readLabPackage(process.cwd());
  const pinned: string[] = [];
  for (const kind of lab.services) {
    const svc = await resolveService(kind);
    if (svc.provider === 'embedded') {
      pinned.push(`${kind}:embedded`);
      continue;
    }
    process.env[SERVICES[kind].envVar] = svc.url;
    pinned.push(`${kind}:env`);
  }
  // Workers inherit this: they use exactly what was resolved here, without printing it again.
  process.env.LABS_PROVIDER = pinned.join(',');
  process.env.LABS_QUIET = '1';
  return stopServices;
}
