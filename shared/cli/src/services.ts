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
import type { LabPackage } from '@labs/lab-kit/manifest';
import { c, LAB, say, UserError } from './ui.ts';

/** How the child uses what {@link labServices} found. */
export interface LabServicesOptions {
  /** Where the one line per service goes (which provider supplied it). */
  log?: (line: string) => void;
  /** True for spec runs: each test file starts its own embedded engine (see childServiceEnv). */
  embeddedPerTestFile?: boolean;
}

/** What {@link findLabServices} found: the child's environment, or the service that could not be had. */
export type FoundServices = { env: NodeJS.ProcessEnv } | { missing: ServiceUnavailableError };

/**
 * Resolves the services `lab` needs and returns the environment that points the child at them, with
 * the child pinned to exactly those (childServiceEnv): each service is found, and announced, once.
 * A service that no provider can supply is returned as `missing`, not thrown.
 */
export async function findLabServices(lab: LabPackage, options: LabServicesOptions = {}): Promise<FoundServices> {
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
      if (error instanceof ServiceUnavailableError) return { missing: error };
      throw error;
    } finally {
      clearTimeout(slow);
    }
  }
  return { env: childServiceEnv(found, { embeddedInChild: embeddedPerTestFile }) };
}

/** One line for a lab that cannot be verified here: which service it needs and how to get it. */
export function needsLine(missing: ServiceUnavailableError): string {
  // The step that could have provided it on this machine says why it did not (no Java, Maven's error).
  const binary = missing.tried.find((t) => t.startsWith('binary: '))?.slice('binary: '.length);
  return `needs ${SERVICES[missing.kind].title}: ${missing.howToGet}${binary ? ` (here: ${binary})` : ''}`;
}

/**
 * {@link findLabServices} for a command a learner runs: a missing service is a UserError (exit 1) naming
 * the service, everything tried, and how to get it.
 */
export async function labServices(lab: LabPackage, options: LabServicesOptions = {}): Promise<NodeJS.ProcessEnv> {
  const found = await findLabServices(lab, options);
  if ('env' in found) return found.env;
  throw new UserError(
    `${c.red('✗')} Cannot run ${lab.slug}: ${found.missing.message}\n\nSee what it needs with ${c.cyan(`${LAB} doctor ${lab.slug}`)}.`,
    1,
  );
}

/** Stops whatever {@link labServices} started (nothing, for services it only found). */
export const releaseServices = stopServices;
