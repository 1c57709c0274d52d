/**
 * Services for a command that runs a lab (its spec, its server, its load script). The command line
 * resolves each service the lab's manifest lists once, up front, and hands the URL to the child through
 * the service's own environment variable. So a service that is down is reported at once, in the
 * doctor's words, instead of as a failed test file; and `--watch` re-runs reuse one server.
 */
import {
  childServiceEnv,
  SERVICES,
  ServiceUnavailableError,
  resolveService,
  stopService,
  stopServices,
  type ResolvedService,
} from '@labs/services';
import type { LabPackage } from '@labs/test-kit';
import { c, LAB, say, UserError } from './ui.ts';

/** How the child uses what {@link labServices} found. */
export interface LabServicesOptions {
  /** Where the one line per service goes (which provider supplied it). */
  log?: (line: string) => void;
  /** True for spec runs: each test file starts its own embedded engine (see childServiceEnv). */
  embeddedPerTestFile?: boolean;
}

/**
 * Resolves the services `lab` needs and returns the environment that points the child at them, with
 * the child pinned to exactly those (childServiceEnv): each service is found, and announced, once.
 * Throws a UserError (exit 1) naming the service and how to get it when one is unavailable.
 */
export async function labServices(lab: LabPackage, options: LabServicesOptions = {}): Promise<NodeJS.ProcessEnv> {
  const { log = (line: string) => say(c.dim(line)), embeddedPerTestFile = false } = options;
  const found: ResolvedService[] = [];
  for (const kind of lab.lab.services) {
    const slow = setTimeout(() => say(c.dim(`Looking for ${SERVICES[kind].title}...`)), 1000);
    try {
      const svc = await resolveService(kind, { log });
      // Found, so the children can start theirs; ours would only sit idle through the run.
      if (svc.provider === 'embedded' && embeddedPerTestFile) await stopService(kind);
      found.push(svc);
    } catch (error) {
      if (error instanceof ServiceUnavailableError) {
        throw new UserError(
          `${c.red('✗')} Cannot run ${lab.slug}: ${error.message}\n\nSee every service with ${c.cyan(`${LAB} doctor`)}.`,
          1,
        );
      }
      throw error;
    } finally {
      clearTimeout(slow);
    }
  }
  return childServiceEnv(found, { embeddedInChild: embeddedPerTestFile });
}

/** Stops whatever {@link labServices} started (nothing, for services it only found). */
export const releaseServices = stopServices;
