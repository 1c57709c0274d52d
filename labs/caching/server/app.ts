/**
 * The API under test, built by `server/lab.ts`: GET and PUT /users/:id over any UserCache. Input is
 * checked with zod schemas (users.ts), and every error is an RFC 9457 problem. The learner does not
 * edit this file.
 */
import type { Express } from 'express';
import { labApp, parseRequest, sendProblem } from '@labs/lab-kit';
import { isPostgresOutage, isRedisOutage } from '@labs/services';
import type { Lookup, UserCache } from './cache.ts';
import { userInput, userParams } from './users.ts';

/** What the routes are built from. */
export interface AppDeps {
  cache: UserCache;
  /** Sent as X-Instance, so a learner sees which instance answered (default: `port-<its port>`). */
  instance?: string;
  /** Told of every read the API answered, and where from (the load script's hit ratio). */
  onLookup?: (lookup: Lookup) => void;
  /** Receives the unexpected errors behind a 500. Default: the log. */
  onError?: (error: Error) => void;
  /** Receives the outages behind a 503 (a service down or stalled), a line at most every 5 s. Default: a warning. */
  onOutage?: (line: string) => void;
}

/** What a client is told to wait before it tries again, in seconds, when a service is not answering. */
export const RETRY_AFTER_SEC = 2;

/**
 * Outages are a 503 with Retry-After (a 500 says we have a bug). Redis only reaches the error handler
 * when the cache does not survive its outage; each test refuses the other service's errors.
 */
const OUTAGES = [
  { test: isPostgresOutage, service: 'The database', retryAfterSec: RETRY_AFTER_SEC },
  { test: isRedisOutage, service: 'The cache', retryAfterSec: RETRY_AFTER_SEC },
];

export function createApp(deps: AppDeps): Express {
  const { cache, onLookup = () => {}, onError: log, onOutage: logOutage } = deps;
  // strict: false lets a body of `null` (or 5, or "x") through the parser, so the schema can say that
  // the body must be an object; strict mode would call it invalid JSON, which it is not.
  const json = { limit: '10kb', strict: false };
  return labApp({ name: 'caching', json, outages: OUTAGES, log, logOutage }, (app) => {
    app.disable('etag'); // an ETag would turn repeated reads into 304s and hide what the cache did
    app.use((req, res, next) => {
      res.set('X-Instance', deps.instance ?? `port-${req.socket.localPort}`);
      next();
    });

    // Express 5 passes a rejected handler to the problem handler: a failure is a 500 problem.
    app.get('/users/:id', async (req, res) => {
      const got = parseRequest(req, res, { params: userParams });
      if (!got) return;
      const lookup = await cache.get(got.params.id);
      onLookup(lookup);
      res.set('X-Cache', lookup.source === 'cache' ? 'hit' : 'miss');
      if (lookup.user === null) return sendProblem(res, 404, `No user with id ${got.params.id}`);
      res.json(lookup.user);
    });

    app.put('/users/:id', async (req, res) => {
      const got = parseRequest(req, res, { params: userParams, body: userInput });
      if (!got) return;
      const { user, created } = await cache.put(got.params.id, got.body);
      res.status(created ? 201 : 200).json(user);
    });
  });
}
