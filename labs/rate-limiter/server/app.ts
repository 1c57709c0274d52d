/**
 * The API under test: one limited endpoint and an unlimited health check. createApp never listens;
 * `server/lab.ts` builds it for `lab serve`, the spec and the load script. Errors are RFC 9457 problems.
 */
import { randomBytes } from 'node:crypto';
import express, { type Express, type RequestHandler } from 'express';
import { notFound, problemHandler } from '@labs/lab-kit';
import { isRedisOutage } from '@labs/services';
import { rateLimit } from './middleware.ts';
import type { RateLimiter } from './limiter.ts';

export interface AppDeps {
  /** Absent: the same API with no limiting at all, the ceiling the load script measures against. */
  limiter?: RateLimiter;
  /** A limiter that comes as Express middleware (a peer library, as its users mount it), instead of `limiter`. */
  limitWith?: RequestHandler;
  limit: number;
  windowMs: number;
  /** The HMAC key that names API keys in Redis (middleware.ts); default: this process's own. */
  apiKeySecret?: string;
  /** Shown in responses so a learner can see which instance answered. */
  instance?: string;
  onLimiterError?: (error: Error) => void;
  /** Where a bug's details go (the client gets a 500 without them); the log by default. */
  onUnexpectedError?: (error: Error) => void;
}

/** Without RATE_LIMIT_KEY_SECRET: one secret for every instance in this process, and only for them. */
export const PROCESS_SECRET = randomBytes(32).toString('base64url');

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.get('/health', (_req, res) => {
    res.json({ ok: true });
  });
  if (deps.limiter)
    app.use('/api', rateLimit({ ...deps, limiter: deps.limiter, apiKeySecret: deps.apiKeySecret ?? PROCESS_SECRET }));
  else if (deps.limitWith) app.use('/api', deps.limitWith);
  app.get('/api/quote', (_req, res) => {
    res.json({ quote: 'Measure, then optimise.', instance: deps.instance ?? 'app' });
  });
  app.use(notFound);
  // The limiter fails open on a Redis outage (middleware.ts), so none reaches here from it; any other
  // route that needed Redis would answer its outage with a 503, as every lab does.
  app.use(
    problemHandler({
      outages: [{ test: isRedisOutage, service: 'The rate limiter', retryAfterSec: 1 }],
      log: deps.onUnexpectedError ?? ((error) => console.error(`[rate-limiter] ${error.message}`)),
      logOutage: (line) => console.warn(`[rate-limiter] ${line}`),
    }),
  );
  return app;
}
