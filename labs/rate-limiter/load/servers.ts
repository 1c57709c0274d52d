/**
 * The servers the load script measures, started in their own process by forkServers(). Each target is
 * three app instances sharing one limit, as three processes behind a load balancer would.
 */
import express from 'express';
import type { Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { resolveService, stopServices } from '@labs/services';
import { deleteByPrefix, listen, type Listening } from '@labs/test-kit';
import { connectLimiterRedis } from '../src/redis.ts';
import { createApp } from '../src/app.ts';
import type { Decision, RateLimiter } from '../src/limiter.ts';
import { createRateLimiter as starterLimiter } from '../src/rate-limiter.ts';
import { createRateLimiter as solutionLimiter } from '../solution/rate-limiter.ts';

export interface BenchServerOptions {
  limit: number;
  windowMs: number;
  instances: number;
  prefix: string;
}

/** rate-limiter-flexible behind the same interface, as a user would drop it in instead of ours. */
function flexibleLimiter(redis: Redis, limit: number, windowMs: number, prefix: string): RateLimiter {
  const limiter = new RateLimiterRedis({
    storeClient: redis,
    points: limit,
    duration: windowMs / 1000,
    keyPrefix: `${prefix}rlflex`,
  });
  const decide = (res: RateLimiterRes, allowed: boolean): Decision => ({
    allowed,
    limit,
    remaining: res.remainingPoints,
    resetMs: res.msBeforeNext,
    retryAfterMs: allowed ? 0 : res.msBeforeNext,
  });
  return {
    async consume(clientId) {
      try {
        return decide(await limiter.consume(clientId), true);
      } catch (rejection) {
        if (rejection instanceof RateLimiterRes) return decide(rejection, false);
        throw rejection;
      }
    },
  };
}

export async function start(options: BenchServerOptions) {
  const { limit, windowMs, instances, prefix } = options;
  const { url: redisUrl } = await resolveService('redis');
  const clients: Redis[] = [];
  const connect = () => {
    const c = connectLimiterRedis(redisUrl);
    clients.push(c);
    return c;
  };
  const builders: Record<string, () => RateLimiter | undefined> = {
    bare: () => undefined,
    starter: () => starterLimiter({ redis: connect(), limit, windowMs, prefix: `${prefix}starter:` }),
    solution: () => solutionLimiter({ redis: connect(), limit, windowMs, prefix: `${prefix}solution:` }),
    'rate-limiter-flexible': () => flexibleLimiter(connect(), limit, windowMs, prefix),
  };
  const servers: Listening[] = [];
  const urls: Record<string, string> = {};
  for (const [name, build] of Object.entries(builders)) {
    for (let i = 0; i < instances; i++) {
      const limiter = build();
      // "bare" is the same API with no limiter at all: the ceiling the others are measured against.
      const app = limiter ? createApp({ limiter, limit, windowMs, instance: `${name}-${i + 1}` }) : bareApp();
      const server = await listen(app);
      servers.push(server);
      urls[`${name}#${i}`] = server.url;
    }
  }
  return {
    urls,
    async close() {
      await Promise.all(servers.map((s) => s[Symbol.asyncDispose]()));
      if (clients[0]) await deleteByPrefix(clients[0], prefix);
      await Promise.all(clients.map((c) => c.quit()));
      await stopServices();
    },
  };
}

function bareApp(): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.get('/api/quote', (_req, res) => {
    res.json({ quote: 'Measure, then optimise.', instance: 'bare' });
  });
  return app;
}
