/**
 * `pnpm lab serve jwt-refresh-tokens [--solution] [--port N]`: the API on a real port, for curl.
 * Config: PORT (default 3000), ACCESS_TTL_SEC (default 300), REFRESH_SECRET (default: random per run).
 */
import { createTokenService } from '#tokens';
import { createRedisClient, resolveService } from '@labs/services';
import { createApp } from './app.ts';
import { createKeyRing } from './keys.ts';
import { TOKEN_DEFAULTS } from './token-service.ts';
import { createUserStore, DEMO_USERS } from './users.ts';

const which = process.execArgv.some((a) => a.includes('lab-solution')) ? 'reference solution' : 'your starter: src/tokens.ts';

async function main() {
  const port = Number(process.env.PORT ?? 3000);
  const accessTtlSec = Number(process.env.ACCESS_TTL_SEC ?? TOKEN_DEFAULTS.accessTtlSec);
  if (!Number.isSafeInteger(accessTtlSec) || accessTtlSec < 1) throw new Error(`ACCESS_TTL_SEC must be a positive whole number, got "${process.env.ACCESS_TTL_SEC}"`);
  const { url } = await resolveService('redis');
  const redis = createRedisClient(url);
  redis.on('error', () => {}); // a failing command answers 500 and is logged by the app
  const keys = createKeyRing();
  const users = await createUserStore();
  const tokens = createTokenService({ redis, prefix: 'labs:serve:jwt-refresh-tokens:', keys, accessTtlSec, refreshSecret: process.env.REFRESH_SECRET });
  const app = createApp({ tokens, users, keys });

  const server = app.listen(port, '127.0.0.1');
  server.once('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EADDRINUSE') {
      console.error(`Port ${port} is already in use. Try another: pnpm lab serve jwt-refresh-tokens --port ${port + 1}`);
    } else {
      console.error(`Could not listen on port ${port}: ${error.message}`);
    }
    // Let stderr flush and the process end by itself: nothing else keeps it alive.
    process.exitCode = 1;
    redis.disconnect();
  });
  server.once('listening', () => {
    const address = server.address();
    const base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : port}`;
    const [user] = DEMO_USERS;
    const login = JSON.stringify({ username: user.username, password: user.password });
    console.log(`JWT refresh tokens lab (${which}) listening on ${base}`);
    console.log(`Access tokens live ${accessTtlSec} s (ACCESS_TTL_SEC); signing key ${keys.current().kid} (RS256)`);
    console.log(`Demo users: ${DEMO_USERS.map((u) => `${u.username} / "${u.password}"`).join(', ')}`);
    console.log('Try:');
    console.log(`  TOKEN=$(curl -s -c jar.txt -H 'content-type: application/json' -d '${login}' ${base}/login | sed -E 's/.*"accessToken":"([^"]+)".*/\\1/')`);
    console.log(`  curl -s -H "authorization: Bearer $TOKEN" ${base}/me`);
    console.log(`  curl -si -b jar.txt -c jar.txt -X POST ${base}/refresh`);
    console.log(`  curl -si -H "authorization: Bearer $TOKEN" -X POST ${base}/logout`);
    console.log(`  curl -s ${base}/.well-known/jwks.json`);
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
  // Config and service errors are written for the reader (ServiceUnavailableError names the fix).
  console.error(error instanceof Error ? error.message : String(error));
  process.exitCode = 1;
});
