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
  constructor(message: string, retryAfterSec = 1) {
    super(message);
    this.retryAfterSec = retryAfterSec;
  }
}

/** An unknown path: a 404 problem rather than Express's HTML page. */
export const notFound: RequestHandler = (req, res) => sendProblem(res, 404, `No route for ${req.method} ${req.path}`);

/**
 * The last middleware of every lab's app. Express's body parser marks client mistakes with a 4xx
 * `status` (malformed JSON, a body too large, a wrong charset): those are answered as they are. A
 * ServiceDownError is a 503. Anything else is a 500 whose details go to `log` only.
 */
export function problemHandler(log: (error: Error) => void = (e) => console.error(e.message)): ErrorRequestHandler {
  return (error: Error & { status?: number; type?: string }, _req, res, _next) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (error instanceof ServiceDownError) {
      res.set('Retry-After', String(error.retryAfterSec));
      sendProblem(res, 503, error.message);
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
