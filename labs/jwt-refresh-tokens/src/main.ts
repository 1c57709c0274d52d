/**
 * `pnpm lab serve jwt-refresh-tokens [--solution] [--port N]`: the API on a real port, for curl.
 * Config: PORT (default 3000), ACCESS_TTL_SEC (default 300), REFRESH_SECRET (default: random per run).
 */
import { createTokenService } from '#tokens';
import { createRedisClient, resolveService, stopServices } from '@labs/services';
import { listen, untilInterrupted } from '@labs/test-kit';
import { createApp } from './app.ts';
import { createKeyRing } from './keys.ts';
import { TOKEN_DEFAULTS } from './token-service.ts';
import { createUserStore, DEMO_USERS } from './users.ts';

const which = process.execArgv.some((a) => a.includes('lab-solution'))
  ? 'reference solution'
  : 'your starter: src/tokens.ts';

async function main() {
  const port = Number(process.env.PORT ?? 3000);
  const accessTtlSec = Number(process.env.ACCESS_TTL_SEC ?? TOKEN_DEFAULTS.accessTtlSec);
  if (!Number.isSafeInteger(accessTtlSec) || accessTtlSec < 1)
    throw new Error(`ACCESS_TTL_SEC must be a positive whole number, got "${process.env.ACCESS_TTL_SEC}"`);
  const { url } = await resolveService('redis');
  const redis = createRedisClient(url);
  redis.on('error', () => {}); // a failing command answers 500 and is logged by the app
  const keys = createKeyRing({ retiredKeyGraceMs: (accessTtlSec + TOKEN_DEFAULTS.clockToleranceSec) * 1000 });
  const users = await createUserStore();
  const tokens = createTokenService({
    redis,
    prefix: 'labs:serve:jwt-refresh-tokens:',
    keys,
    accessTtlSec,
    refreshSecret: process.env.REFRESH_SECRET,
  });
  const app = createApp({ tokens, users, keys });

  try {
    await using server = await listen(app, port);
    const base = server.url;
    const [user] = DEMO_USERS;
    const login = JSON.stringify({ username: user.username, password: user.password });
    console.log(`JWT refresh tokens lab (${which}) listening on ${base}`);
    console.log(`Access tokens live ${accessTtlSec} s (ACCESS_TTL_SEC); signing key ${keys.current().kid} (RS256)`);
    console.log(`Demo users: ${DEMO_USERS.map((u) => `${u.username} / "${u.password}"`).join(', ')}`);
    console.log('Try:');
    console.log(
      `  TOKEN=$(curl -s -c jar.txt -H 'content-type: application/json' -d '${login}' ${base}/login | sed -E 's/.*"accessToken":"([^"]+)".*/\\1/')`,
    );
    console.log(`  curl -s -H "authorization: Bearer $TOKEN" ${base}/me`);
    console.log(`  curl -si -b jar.txt -c jar.txt -X POST ${base}/refresh`);
    console.log(`  curl -si -H "authorization: Bearer $TOKEN" -X POST ${base}/logout`);
    console.log(`  curl -s ${base}/.well-known/jwks.json`);
    console.log('Stop:  Ctrl-C');
    await untilInterrupted();
  } finally {
    redis.disconnect();
    await stopServices(); // a redis-server binary this process started
  }
}

main().catch((error: unknown) => {
  // Config, service and port errors are written for the reader (ServiceUnavailableError names the fix).
  console.error(error instanceof Error ? error.message : String(error));
  process.exitCode = 1;
});
