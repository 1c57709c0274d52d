/**
 * The outage policy outside an HTTP request: a WebSocket frame, a job, a consumed message fails the
 * way a request does, and is sorted the way {@link problemHandler} sorts a request's error.
 */
import { atMostEvery, type Outage } from './problem.ts';

/** How {@link failureReporter} sorts and reports. */
export interface FailureReporterOptions {
  /** The services whose failures are outages (the same list `problemHandler` gets). */
  outages: readonly Outage[];
  /** Where the lines go (default: console.warn). */
  log?: (line: string) => void;
}

/**
 * Returns `report(what, error)`, which says whether `error` is one of `outages` (the outage, else
 * undefined) and reports it: an outage as `<what>: <service> is not answering: <message>`, at most a
 * line every 5 s (it fails everything that needs the service, many times a second), with how many were
 * left out; anything else is a bug, reported every time with its stack. The caller answers by the
 * result: an outage is worth retrying (a 503, an "unavailable" frame), a bug is not, and its details
 * stay in the log.
 */
export function failureReporter(options: FailureReporterOptions): (what: string, error: unknown) => Outage | undefined {
  const { outages, log = console.warn } = options;
  const reportOutage = atMostEvery(5000, (line: string, skipped: number) =>
    log(skipped > 0 ? `${line} (and ${skipped} more since the last report)` : line),
  );
  return (what, error) => {
    const outage = outages.find((candidate) => candidate.test(error));
    if (outage) reportOutage(`${what}: ${outage.service} is not answering: ${(error as Error).message}`);
    else log(`${what}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    return outage;
  };
}
