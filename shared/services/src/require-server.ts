/**
 * A lab that needs a real server where the resolver may hand out an embedded engine: PGlite serves
 * every connection through one session, a few at a time, so a lab whose consumers run in several
 * processes, each with transactions of its own, cannot run on it.
 */
import { SERVICES } from './kinds.ts';
import type { ResolvedService } from './providers/types.ts';
import { ServiceUnavailableError } from './resolve.ts';

/**
 * Throws a {@link ServiceUnavailableError} when `service` is an embedded engine, saying why the lab
 * needs a server (`why`, a sentence) and how to start one; does nothing for a server.
 */
export function requireServer(service: Pick<ResolvedService, 'kind' | 'provider'>, why: string): void {
  if (service.provider !== 'embedded') return;
  const { title } = SERVICES[service.kind];
  throw new ServiceUnavailableError(
    service.kind,
    `${why} The embedded ${title} serves one session at a time and cannot. Start a server: ` +
      `docker compose up -d --wait ${service.kind}`,
  );
}
