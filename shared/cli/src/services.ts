/**
 * Services for a command that runs a lab (its spec, its server, its load script). The command line
 * resolves each service the lab's manifest lists once, up front, and hands the URL to the child through
 * the service's own environment variable. So a service that is down is reported at once, in the
 * doctor's words, instead of as a failed test file; and `--watch` re-runs reuse one server.
 */
import { SERVICES, ServiceUnavailableError, resolveService, stopServices } from '@labs/services';
import type { LabPackage } from '@labs/test-kit';
import { c, say, UserError } from './ui.ts';

/**
 * Resolves the services `lab` needs and returns the environment that points the child at them; `log`
 * gets one line per service saying where it was found.
 * Throws a UserError (exit 1) naming the service and how to get it when one is unavailable.
 */
export async function labServices(lab: LabPackage, log: (line: string) => void = (line) => say(c.dim(line))): Promise<NodeJS.ProcessEnv> {
  const env: NodeJS.ProcessEnv = {};
  for (const kind of lab.lab.services) {
    const slow = setTimeout(() => say(c.dim(`Looking for ${SERVICES[kind].title}...`)), 1000);
    try {
      const svc = await resolveService(kind, { log });
      env[SERVICES[kind].envVar] = svc.url;
    } catch (error) {
      if (error instanceof ServiceUnavailableError) {
        throw new UserError(`${c.red('✗')} Cannot run ${lab.slug}: ${error.message}\n\nSee every service with ${c.cyan('pnpm lab doctor')}.`, 1);
      }
      throw error;
    } finally {
      clearTimeout(slow);
    }
  }
  return env;
}

/** Stops whatever {@link labServices} started (nothing, for services it only found). */
export const releaseServices = stopServices;
