/** The API under test, built by `server/lab.ts`: one limited endpoint and the kit's unlimited /health. */
import { randomBytes } from 'node:crypto';
import type { Express, RequestHandler } from 'express';
import { labApp } from '@labs/lab-kit';
import { isRedisOutage } from '@labs/services';
import type { RateLimiter } from './limiter.ts';
import { type RateLimitMiddlewareOptions, rateLimit } from './middleware.ts';

export interface AppDeps extends Omit<RateLimitMiddlewareOptions, 'limiter' | 'apiKeySecret'> {
  /**
   * What limits /api: a RateLimiter, or a peer library's Express middleware (as its users mount it).
   * Absent: no limiting at all, the ceiling the load script measures against.
   */
  limiter?: RateLimiter | RequestHandler;
  apiKeySecret?: string; // default: PROCESS_SECRET
  /** Shown in responses so a learner can see which instance answered. */
  instance?: string;
  /** Where a bug's details go (the client gets a 500 without them); the log by default. */
  onUnexpectedError?: (error: Error) => void;
}

/** Without RATE_LIMIT_KEY_SECRET: one secret for every instance in this process, and only for them. */
export const PROCESS_SECRET = randomBytes(32).toString('base64url');

export function createApp(deps: AppDeps): Express {
  const { limiter, apiKeySecret = PROCESS_SECRET } = deps;
  // The limiter fails open on a Redis outage (middleware.ts), so none reaches the problem handler from
  // it; any other route that needed Redis would answer its outage with a 503, as every lab does.
  const outages = [{ test: isRedisOutage, service: 'The rate limiter', retryAfterSec: 1 }];
  return labApp({ name: 'rate-limiter', outages, log: deps.onUnexpectedError }, (app) => {
    if (typeof limiter === 'function') app.use('/api', limiter);
    else if (limiter) app.use('/api', rateLimit({ ...deps, limiter, apiKeySecret }));
    app.get('/api/quote', (_req, res) => {
      res.json({ quote: 'Measure, then optimise.', instance: deps.instance ?? 'app' });
    });
  });
}
