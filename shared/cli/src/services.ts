/**
 * Services for a command that runs a lab (its spec, its server, its load script). The command line
 * resolves each service the lab's manifest lists once, up front, and hands the URL to the child through
 * the service's own environment variable. So a service that is down is reported at once, in the
 * doctor's words, instead of as a failed test file; and `--watch` re-runs reuse one server.
 */
import { SERVICES, ServiceUnavailableError, resolveService, stopServices } from '@labs/services';
import type { LabPackage } from '@labs/test-kit';
import { c, LAB, say, UserError } from './ui.ts';

/** How the child uses what {@link labServices} found. */
export interface LabServicesOptions {
  /** Where the one line per service goes (which provider supplied it). */
  log?: (line: string) => void;
  /**
   * True for spec runs: an embedded engine then is not handed over, because each test file starts its
   * own (one PGlite holds one database, so files could not be isolated on a shared one). Servers and
   * load scripts share the command line's engine instead of starting a second one.
   */
  embeddedPerTestFile?: boolean;
}

/**
 * Resolves the services `lab` needs and returns the environment that points the child at them. The
 * child is pinned to exactly that (`LABS_PROVIDER=<kind>:env`) and stays quiet about it, so each
 * service is found, and announced, once.
 * Throws a UserError (exit 1) naming the service and how to get it when one is unavailable.
 */
export async function labServices(lab: LabPackage, options: LabServicesOptions = {}): Promise<NodeJS.ProcessEnv> {
  const { log = (line: string) => say(c.dim(line)), embeddedPerTestFile = false } = options;
  const env: NodeJS.ProcessEnv = {};
  const pinned: string[] = [];
  for (const kind of lab.lab.services) {
    const slow = setTimeout(() => say(c.dim(`Looking for ${SERVICES[kind].title}...`)), 1000);
    try {
      const svc = await resolveService(kind, { log });
      if (svc.provider === 'embedded' && embeddedPerTestFile) {
        pinned.push(`${kind}:embedded`);
      } else {
        env[SERVICES[kind].envVar] = svc.url;
        pinned.push(`${kind}:env`);
      }
    } catch (error) {
      if (error instanceof ServiceUnavailableError) {
        throw new UserError(`${c.red('✗')} Cannot run ${lab.slug}: ${error.message}\n\nSee every service with ${c.cyan(`${LAB} doctor`)}.`, 1);
      }
      throw error;
    } finally {
      clearTimeout(slow);
    }
  }
  if (pinned.length > 0) {
    env.LABS_PROVIDER = pinned.join(',');
    env.LABS_QUIET = '1';
  }
  return env;
}

/** Stops whatever {@link labServices} started (nothing, for services it only found). */
export const releaseServices = stopServices;
