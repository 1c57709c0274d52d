/**
 * The servers the load script measures, started in their own process by forkServers(). Each target is
 * three app instances sharing one limit, as three processes behind a load balancer would.
 */
import type { RequestHandler } from 'express';
import { rateLimit as expressRateLimit, ipKeyGenerator } from 'express-rate-limit';
import type { Redis } from 'ioredis';
import { RedisStore } from 'rate-limit-redis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { starterVersions } from '@labs/bench';
import { sendProblem } from '@labs/lab-kit';
import { stopServices } from '@labs/services';
import { openLab } from '@labs/lab-kit';
import rateLimiterLab from '../server/lab.ts';
import { LIMITER_REDIS_OPTIONS } from '../server/redis.ts';
import type { Decision, RateLimiter } from '../server/limiter.ts';
import { createRateLimiter as solutionLimiter } from '../solution/rate-limiter.ts';

/** A limit: at most `limit` requests per `windowMs` per client. */
export interface Policy {
  limit: number;
  windowMs: number;
}

export interface BenchServerOptions extends Policy {
  instances: number;
  /** The policy of the flood scenario's servers: a strict one, so a denied client must wait. */
  flood: Policy;
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

/**
 * express-rate-limit with its Redis store (rate-limit-redis), mounted as its users mount it: a fixed
 * window counted in Redis, one script call per request, the IETF RateLimit headers, and our problem body
 * for a 429 so every target answers alike.
 */
function expressLimiter(redis: Redis, limit: number, windowMs: number, prefix: string): RequestHandler {
  return expressRateLimit({
    windowMs,
    limit,
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    // The API key, as the lab's limiter keys on it; clients without one by address (IPv6 by its /56, the helper's way).
    keyGenerator: (req) => String(req.headers['x-api-key'] ?? ipKeyGenerator(req.ip ?? '')),
    store: new RedisStore({
      prefix: `${prefix}erl:`,
      sendCommand: (command: string, ...args: string[]) => redis.call(command, ...args) as Promise<number>,
    }),
    handler: (_req, res) => sendProblem(res, 429, 'This key has used its allowance; see Retry-After.'),
  });
}

/**
 * Counts the commands `client` sends, as the client sees them (each script call, each GET or SET):
 * one target's clients count that target's calls alone, where Redis's server-wide counters would add
 * every other target's, and anything else using the same Redis.
 */
function countCommands(client: Redis, counts: Record<string, number>, key: string): Redis {
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    counts[key] = (counts[key] ?? 0) + 1;
    return send(...args);
  }) as Redis['sendCommand'];
  return client;
}

export async function start(options: BenchServerOptions) {
  const { instances } = options;
  // One context for every target: one Redis, clients closed and keys deleted when the run ends.
  const lab = await openLab(rateLimiterLab, { purpose: 'bench' });
  const { prefix } = lab.context;
  /** Redis commands per target (`<target>.redisCalls`), counted by each target's own clients. */
  const counts: Record<string, number> = {};
  let target = '';
  const redis = async () =>
    countCommands(await lab.context.redis(LIMITER_REDIS_OPTIONS), counts, `${target}.redisCalls`);
  // The committed starter, and the learner's src/ beside it as "your code" when they have edited it.
  const starters = await starterVersions(
    new URL('../src/rate-limiter.ts', import.meta.url),
    (url) => import(url.href) as Promise<typeof import('../src/rate-limiter.ts')>,
  );
  /** Each target's limiter under `policy`, its keys under a prefix of its own. */
  const builders = (
    policy: Policy,
    tag: string,
  ): Record<string, () => Promise<RateLimiter | RequestHandler | undefined>> => ({
    bare: async () => undefined,
    ...Object.fromEntries(
      starters.map(({ name, module }) => [
        name,
        async () =>
          module.createRateLimiter({
            redis: await redis(),
            ...policy,
            prefix: `${prefix}${tag}${name.replace(' ', '-')}:`,
          }),
      ]),
    ),
    solution: async () => solutionLimiter({ redis: await redis(), ...policy, prefix: `${prefix}${tag}solution:` }),
    'rate-limiter-flexible': async () =>
      flexibleLimiter(await redis(), policy.limit, policy.windowMs, `${prefix}${tag}`),
    'express-rate-limit': async () => expressLimiter(await redis(), policy.limit, policy.windowMs, `${prefix}${tag}`),
  });
  const urls: Record<string, string> = {};
  for (const [tag, policy] of [
    ['', options],
    ['flood-', options.flood],
  ] as const) {
    for (const [name, build] of Object.entries(builders(policy, tag))) {
      target = `${tag}${name}`;
      counts[`${target}.redisCalls`] = 0;
      for (let i = 0; i < instances; i++) {
        // "bare" (null) is the same API with no limiter at all: the ceiling the others are measured against.
        const built = await rateLimiterLab.build(lab.context, {
          ...policy,
          limitWith: (await build()) ?? null,
          instance: `${name}-${i + 1}`,
        });
        urls[`${target}#${i}`] = (await lab.context.listen(built)).url;
      }
    }
  }
  // The servers' process's CPU time (user + system, µs) beside the counts: only the target under load is
  // busy in a round, so its growth over a round, per request, is what that target's requests cost the
  // servers, a figure that a busy machine slows down far less than it slows req/s.
  const serverCpuUs = () => {
    const { user, system } = process.cpuUsage();
    return user + system;
  };
  return {
    urls,
    stats: () => ({ ...counts, serverCpuUs: serverCpuUs() }),
    close: () => lab.close().then(stopServices),
  };
}
