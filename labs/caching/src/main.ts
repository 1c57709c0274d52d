/**
 * `pnpm lab serve caching [--solution] [--port N]`: the API on a real port, over a seeded database and
 * a real Redis, for curl or a browser. Run two of them on different ports to see instances share a cache.
 */
import { fileURLToPath } from 'node:url';
import { relative } from 'node:path';
import { createPgPool, createRedisClient, resolveService, stopServices } from '@labs/services';
import { listen, untilInterrupted } from '@labs/test-kit';
import { createUserCache } from '#user-cache';
import { createApp } from './app.ts';
import { readConfig } from './config.ts';
import { ensureDatabase } from './database.ts';
import { createUserRepository, migrate, seedUsers } from './user-repository.ts';

const PREFIX = 'labs:caching:serve:';

async function main(): Promise<number> {
  let config: ReturnType<typeof readConfig>;
  try {
    config = readConfig();
  } catch (error) {
    console.error((error as Error).message);
    return 1;
  }
  const implementation = relative(process.cwd(), fileURLToPath(import.meta.resolve('#user-cache')));
  const [pgUrl, { url: redisUrl }] = await Promise.all([ensureDatabase('labs_caching'), resolveService('redis')]);
  const pool = createPgPool(pgUrl);
  const redis = createRedisClient(redisUrl);
  redis.on('error', () => {}); // ioredis reconnects by itself; requests report failures as they happen
  await migrate(pool);
  await seedUsers(pool, config.seedUsers);

  const cache = createUserCache({
    repository: createUserRepository(pool, config.schemaVersion),
    redis,
    prefix: PREFIX,
    schemaVersion: config.schemaVersion,
    ttlMs: config.ttlMs,
    onCacheError: (error) => console.error(`cache: ${error.message}`),
  });
  const app = createApp({ cache, instance: `port-${config.port}` });

  try {
    await using server = await listen(app, config.port);
    const url = server.url;
    console.log(`Caching lab (${implementation}) listening on ${url}`);
    console.log(`  users 1..${config.seedUsers} in PostgreSQL database labs_caching, cache in Redis under ${PREFIX}`);
    console.log(`  schema version ${config.schemaVersion}, TTL ${config.ttlMs} ms\n`);
    console.log('Try:');
    console.log(`  curl -i ${url}/users/42                  # run it twice: X-Cache: miss, then hit`);
    console.log(
      `  curl -i -X PUT ${url}/users/42 -H 'content-type: application/json' -d '{"name":"Ada Lovelace","email":"ada@example.com"}'`,
    );
    console.log(`  curl -i ${url}/users/42                  # the new name, or the old one?`);
    console.log(`  curl -i ${url}/users/0                   # 400`);
    console.log(`  curl -i ${url}/users/99999999            # 404`);
    console.log('Press Ctrl-C to stop.');
    await untilInterrupted();
  } finally {
    await Promise.allSettled([pool.end(), redis.quit()]);
    await stopServices();
  }
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(`Could not start the caching lab: ${(error as Error).message}`);
    process.exitCode = 1;
  },
);
