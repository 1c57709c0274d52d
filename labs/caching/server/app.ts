/**
 * The API under test: GET and PUT /users/:id over any UserCache. createApp never listens;
 * `server/lab.ts` builds it for `lab serve`, the spec and the load script. Input is checked with zod
 * schemas (users.ts), and every error is an RFC 9457 problem. The learner does not edit this file.
 */
import express, { type Express } from 'express';
import { notFound, parseInput, problemHandler, sendProblem } from '@labs/lab-kit';
import { isPostgresOutage, isRedisOutage } from '@labs/services';
import type { Lookup, UserCache } from './cache.ts';
import { userInput, userParams } from './users.ts';

/** What the routes are built from; lab.ts documents each (CachingLabOptions). */
export interface AppDeps {
  cache: UserCache;
  /** Sent as X-Instance (default: `port-<its port>`). */
  instance?: string;
  onLookup?: (lookup: Lookup) => void;
  onError?: (error: Error) => void;
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
  const {
    cache,
    onLookup = () => {},
    onError = (e) => console.error(`[caching] ${e.message}`),
    onOutage = (line) => console.warn(`[caching] ${line}`),
  } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag'); // an ETag would turn repeated reads into 304s and hide what the cache did
  // strict: false lets a body of `null` (or 5, or "x") through the parser, so the schema can say that
  // the body must be an object; strict mode would call it invalid JSON, which it is not.
  app.use(express.json({ limit: '10kb', strict: false }));
  app.use((req, res, next) => {
    res.set('X-Instance', deps.instance ?? `port-${req.socket.localPort}`);
    next();
  });

  app.get('/health', (_req, res) => {
    res.json({ ok: true, instance: res.get('X-Instance') });
  });

  // Express 5 passes a rejected handler to the error handler below: a failure is a 500 problem.
  app.get('/users/:id', async (req, res) => {
    const params = parseInput(res, userParams, req.params);
    if (!params) return;
    const lookup = await cache.get(params.id);
    onLookup(lookup);
    res.set('X-Cache', lookup.source === 'cache' ? 'hit' : 'miss');
    if (lookup.user === null) {
      sendProblem(res, 404, `No user with id ${params.id}`);
      return;
    }
    res.json(lookup.user);
  });

  app.put('/users/:id', async (req, res) => {
    const params = parseInput(res, userParams, req.params);
    if (!params) return;
    const input = parseInput(res, userInput, req.body);
    if (!input) return;
    const { user, created } = await cache.put(params.id, input);
    res.status(created ? 201 : 200).json(user);
  });

  app.use(notFound);
  // Body-parser mistakes (invalid JSON, too large, an unknown charset) and undecodable URLs keep their
  // 4xx; an outage is a 503 (OUTAGES); anything else is a 500 whose details go to onError only.
  app.use(problemHandler({ outages: OUTAGES, log: onError, logOutage: onOutage }));
  return app;
}
