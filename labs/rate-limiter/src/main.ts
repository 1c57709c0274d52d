/**
 * `pnpm lab serve rate-limiter [--solution] [--port N]`: the API on a real port, for curl.
 * Config: PORT (default 3000), RATE_LIMIT_MAX (default 10), RATE_LIMIT_WINDOW_MS (default 60000).
 */
import { createRateLimiter } from '#rate-limiter';
import { resolveService } from '@labs/services';
import { createApp } from './app.ts';
import { readConfig } from './config.ts';
import { connectLimiterRedis } from './redis.ts';

const which = process.execArgv.some((a) => a.includes('lab-solution')) ? 'reference solution' : 'your starter (src/rate-limiter.ts)';

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
  const server = app.listen(port, '127.0.0.1');
  server.once('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EADDRINUSE') {
      console.error(`Port ${port} is already in use. Try another: pnpm lab serve rate-limiter --port ${port + 1}`);
    } else {
      console.error(`Could not listen on port ${port}: ${error.message}`);
    }
    process.exit(1);
  });
  server.once('listening', () => {
    const address = server.address();
    const actual = typeof address === 'object' && address ? address.port : port;
    console.log(`Rate limiter lab (${which}) listening on http://127.0.0.1:${actual}`);
    console.log(`Limit: ${config.limit} requests per ${config.windowMs} ms per client (X-API-Key, else IP)`);
    console.log(`Try:   for i in $(seq 1 ${config.limit + 2}); do curl -s -o /dev/null -w '%{http_code} ' -H 'X-API-Key: demo' http://127.0.0.1:${actual}/api/quote; done; echo`);
    console.log('Stop:  Ctrl-C');
  });
  const stop = () => {
    server.closeAllConnections();
    server.close(() => {
      redis.disconnect();
      process.exit(0);
    });
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((error: unknown) => {
  // Config and service errors are written for the reader; anything else is a bug worth its message.
  const message = error instanceof Error ? error.message : String(error);
  console.error(message);
  process.exit(1);
});
