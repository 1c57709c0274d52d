/**
 * Express middleware around any RateLimiter: who the client is, the response headers, the 429, and
 * what to do when the limiter itself fails. The learner does not edit this file.
 */
import { createHmac } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { atMostEvery, sendProblem } from '@labs/lab-kit';
import { isRedisOutage } from '@labs/services';
import type { Decision, RateLimiter } from './limiter.ts';

/** An API key: 1 to 128 URL-safe characters. Anything else is a client error, not a new client id. */
const API_KEY = /^[A-Za-z0-9._~-]{1,128}$/;

export interface RateLimitMiddlewareOptions {
  limiter: RateLimiter;
  /** The limit per window, for the RateLimit-Policy header. */
  limit: number;
  windowMs: number;
  /** Called when Redis is down or slow (the request is then let through). Other errors are bugs: a 500. */
  onLimiterError?: (error: Error) => void;
  /** The key of the HMAC that names an API key in Redis; instances that share limits share it. */
  apiKeySecret: string;
}

/**
 * The client a request counts against: its X-API-Key, else its IP address (`req.ip`: the socket's
 * peer unless the app sets Express's `trust proxy`, see the README).
 *
 * This lab has no key store, so any well-formed key is its own client: a caller could mint fresh
 * allowances by inventing keys. A real API authenticates the key first (an unknown key is a 401) and
 * limits the account it belongs to.
 */
export function clientIdOf(req: Request, apiKeySecret: string): { id: string } | { error: string } {
  const key = req.get('x-api-key');
  if (key === undefined) return { id: `ip:${req.ip ?? 'unknown'}` };
  if (!API_KEY.test(key)) return { error: 'X-API-Key must be 1-128 characters from A-Z, a-z, 0-9 and . _ ~ -' };
  // An API key is a credential: it never appears in Redis (SCAN, MONITOR, a backup). Keyed, because
  // keys people choose are guessable and a plain SHA-256 of "demo" is one lookup away; with an HMAC, a
  // dump without the secret names nobody.
  return { id: `key:${createHmac('sha256', apiKeySecret).update(key).digest('base64url')}` };
}

/** Failing open is the policy; saying so at most every 5 s keeps the log readable during an outage. */
const warnFailingOpen = atMostEvery(5000, (e: Error) =>
  console.warn(`[rate-limiter] Redis unavailable, failing open: ${e.message}`),
);

/**
 * Adds the IETF RateLimit-Policy / RateLimit headers to every response and answers 429 with
 * Retry-After once a client is over its limit.
 */
export function rateLimit(options: RateLimitMiddlewareOptions): RequestHandler {
  const { limiter, windowMs, limit, onLimiterError = warnFailingOpen, apiKeySecret } = options;
  const windowSeconds = Math.ceil(windowMs / 1000);
  const policy = `"per-client";q=${limit};w=${windowSeconds}`;

  return async (req: Request, res: Response, next: NextFunction) => {
    const client = clientIdOf(req, apiKeySecret);
    if ('error' in client) return sendProblem(res, 400, client.error);
    let decision: Decision;
    try {
      decision = await limiter.consume(client.id);
    } catch (error) {
      // Fail open on an outage only: a limiter outage must not become an API outage (the trade-off is
      // in the README). Anything else is a bug in the limiter, passed on to be logged and answered 500:
      // failing open on it would switch limiting off in silence.
      if (!isRedisOutage(error)) return next(error);
      onLimiterError(error as Error);
      return next();
    }
    // setHeader, not Express's res.set: these are plain strings, and this runs on every request.
    res.setHeader('RateLimit-Policy', policy);
    res.setHeader('RateLimit', `"per-client";r=${decision.remaining};t=${Math.ceil(decision.resetMs / 1000)}`);
    if (decision.allowed) return next();
    const { retryAfterMs } = decision;
    res.setHeader('Retry-After', String(Math.max(1, Math.ceil(retryAfterMs / 1000))));
    sendProblem(res, 429, `Over the limit of ${limit} requests per ${windowSeconds} s`, { retryAfterMs });
  };
}
