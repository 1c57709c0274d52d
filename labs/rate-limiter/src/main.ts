/**
 * `pnpm lab serve rate-limiter [--solution] [--port N]`: the API on a real port, for curl.
 * Config: PORT (default 3000), RATE_LIMIT_MAX (default 10), RATE_LIMIT_WINDOW_MS (default 60000).
 */
import { once } from 'node:events';
import { createRateLimiter } from '#rate-limiter';
import { resolveService, stopServices } from '@labs/services';
import { listen, untilInterrupted } from '@labs/test-kit';
import { createApp } from './app.ts';
import { readConfig } from './config.ts';
import { connectLimiterRedis } from './redis.ts';

const which = process.execArgv.some((a) => a.includes('lab-solution'))
  ? 'reference solution'
  : 'your starter (src/rate-limiter.ts)';

async function main() {
  const config = readConfig();
  const port = Number(process.env.PORT ?? 3000);
  const { url } = await resolveService('redis');
  const redis = connectLimiterRedis(url);
  let lastWarning = 0;
  redis.on('error', () => {}); // reported per request below, at most every 5 s
  const limiter = createRateLimiter({ redis, ...config, prefix: 'labs:serve:rate-limiter:' });
  const app = createApp({
    limiter,
    ...config,
    onLimiterError: (error) => {
      if (Date.now() - lastWarning < 5000) return;
      lastWarning = Date.now();
      console.warn(`[rate-limiter] Redis unavailable, failing open: ${error.message}`);
    },
  });
  try {
    // Without an offline queue, a command sent before the connection is ready fails and its request is
    // let through: wait for the connection, so the first requests are limited too.
    if (redis.status !== 'ready') {
      await once(redis, 'ready', { signal: AbortSignal.timeout(5000) }).catch((error: Error) => {
        throw new Error(`Redis did not become ready within 5 s: ${error.message}`);
      });
    }
    await using server = await listen(app, port);
    console.log(`Rate limiter lab (${which}) listening on ${server.url}`);
    console.log(`Limit: ${config.limit} requests per ${config.windowMs} ms per client (X-API-Key, else IP)`);
    console.log(
      `Try:   for i in $(seq 1 ${config.limit + 2}); do curl -s -o /dev/null -w '%{http_code} ' -H 'X-API-Key: demo' ${server.url}/api/quote; done; echo`,
    );
    console.log('Stop:  Ctrl-C');
    await untilInterrupted();
  } finally {
    redis.disconnect();
    await stopServices(); // a redis-server binary this process started
  }
}

main().catch((error: unknown) => {
  // Config, service and port errors are written for the reader; anything else is a bug worth its message.
  console.error(error instanceof Error ? error.message : String(error));
  process.exitCode = 1;
});
