/**
 * Errors answered in one shape: RFC 9457 "problem details" (`application/problem+json`), the HTTP
 * ecosystem's own format. A 4xx says what the client got wrong; a 503 says when to come back; a 500
 * says nothing about the server's insides (the details go to the log, never into the body).
 */
import type { ErrorRequestHandler, RequestHandler, Response } from 'express';

/** The body of every error response. */
export interface Problem {
  /** A short, stable summary of the kind of problem (the status's reason phrase by default). */
  title: string;
  status: number;
  /** What went wrong this time, for a person. */
  detail?: string;
  /** Anything else a client can act on (e.g. `retryAfterMs`, `errors`). */
  [extension: string]: unknown;
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/**
 * Sends `status` with a problem body; `extra` adds members (RFC 9457 calls them extensions).
 *
 * Written with Node's own `end()` rather than Express's `send()`: send() exists to make a body
 * cacheable (a SHA-1 ETag of it, a freshness check, a 304), and nobody revalidates an error. The
 * difference matters where errors are the bulk of the traffic: a rate limiter answering a flood with
 * 429s should spend less on each of them than the API spends on a success, not more.
 */
export function sendProblem(res: Response, status: number, detail?: string, extra: Record<string, unknown> = {}): void {
  const problem: Problem = { title: TITLES[status] ?? 'Error', status, ...(detail ? { detail } : {}), ...extra };
  const body = JSON.stringify(problem);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/problem+json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/**
 * Thrown (or passed to `next`) when a service the request needs is down or too slow: the answer is a
 * 503 with Retry-After, which a client can act on, instead of a 500, which it cannot.
 */
export class ServiceDownError extends Error {
  override readonly name = 'ServiceDownError';
  readonly retryAfterSec: number;
  /** Members the problem body carries besides `detail` (e.g. the `jobId` a client can look up). */
  readonly extra: Record<string, unknown>;
  /**
   * `options.cause`: the failure behind it, for the log line (never for the client); `options.extra`:
   * members for the problem body.
   */
  constructor(message: string, retryAfterSec = 1, options?: ErrorOptions & { extra?: Record<string, unknown> }) {
    super(message, options);
    this.retryAfterSec = retryAfterSec;
    this.extra = options?.extra ?? {};
  }
}

/** An unknown path: a 404 problem rather than Express's HTML page. */
export const notFound: RequestHandler = (req, res) => sendProblem(res, 404, `No route for ${req.method} ${req.path}`);

/** How one service's outage is answered: which errors are one, how to name it, when to come back. */
export interface Outage {
  /**
   * Whether `error` is this service's outage: `isPostgresOutage`, `isRedisOutage`, `isRabbitOutage`
   * or `isKafkaOutage` from `@labs/services`, each of which also refuses an error that came from
   * another service's client, so the order of the list does not decide which service is named.
   */
  test: (error: unknown) => boolean;
  /** The service as the client reads it, e.g. 'The database': "The database is not answering; ...". */
  service: string;
  /** Retry-After, in seconds (default 1). */
  retryAfterSec?: number;
}

/** What {@link problemHandler} does besides the body-parser's 4xx. */
export interface ProblemHandlerOptions {
  /** The services whose outages are a 503 with Retry-After rather than a 500 (default: none). */
  outages?: readonly Outage[];
  /** Where a bug (the error behind a 500) goes: every one of them (default: console.error). */
  log?: (error: Error) => void;
  /**
   * Where an outage (the error behind a 503) is reported, one line at most every 5 s (an outage fails
   * every request that needs the service); default: console.warn.
   */
  logOutage?: (line: string) => void;
}

/**
 * The last middleware of every lab's app. Express's body parser marks client mistakes with a 4xx
 * `status` (malformed JSON, a body too large, a wrong charset): those are answered as they are. A
 * ServiceDownError, or an error one of `outages` recognises, is a 503 with Retry-After, reported
 * through `logOutage` at most every 5 s. Anything else is a 500 whose details go to `log` only.
 * (A function instead of options is `log` alone, and outages are not reported: the form of labs that
 * report their own.)
 */
export function problemHandler(options: ProblemHandlerOptions | ((error: Error) => void) = {}): ErrorRequestHandler {
  const {
    outages = [],
    log = (e: Error) => console.error(e.message),
    logOutage = console.warn,
  }: ProblemHandlerOptions = typeof options === 'function' ? { log: options, logOutage: () => {} } : options;
  const reportOutage = atMostEvery(5000, (line: string, skipped: number) =>
    logOutage(skipped > 0 ? `${line} (and ${skipped} more since the last report)` : line),
  );
  return (error: Error & { status?: number; type?: string }, _req, res, _next) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (error instanceof ServiceDownError) {
      const cause = error.cause instanceof Error ? ` (${error.cause.message})` : '';
      reportOutage(`503: ${error.message}${cause}`);
      res.set('Retry-After', String(error.retryAfterSec));
      sendProblem(res, 503, error.message, error.extra);
      return;
    }
    const outage = outages.find((candidate) => candidate.test(error));
    if (outage) {
      reportOutage(`${outage.service} is not answering (503): ${error.message}`);
      res.set('Retry-After', String(outage.retryAfterSec ?? 1));
      sendProblem(res, 503, `${outage.service} is not answering; try again in a few seconds.`);
      return;
    }
    const status = error.status;
    if (status !== undefined && status >= 400 && status < 500) {
      const limit = (error as { limit?: number }).limit;
      const detail =
        error.type === 'entity.parse.failed'
          ? 'The body is not valid JSON'
          : error.type === 'entity.too.large' && limit !== undefined
            ? `The body is larger than the ${limit} bytes this endpoint accepts`
            : error.message;
      sendProblem(res, status, detail);
      return;
    }
    log(error);
    sendProblem(res, 500, 'Something went wrong on our side; the log has the details');
  };
}

/**
 * `report`, called at most once every `everyMs`: an outage fails every request that needs the service,
 * many a second, and one line every few seconds says enough while keeping the log readable for
 * whatever else goes wrong meanwhile. `report` learns how many calls were skipped since its last one.
 */
export function atMostEvery<T>(everyMs: number, report: (value: T, skipped: number) => void): (value: T) => void {
  let last = Number.NEGATIVE_INFINITY;
  let skipped = 0;
  return (value) => {
    const now = Date.now();
    if (now - last < everyMs) {
      skipped++;
      return;
    }
    report(value, skipped);
    last = now;
    skipped = 0;
  };
}
