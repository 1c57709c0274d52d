/**
 * The servers the load script measures, started in their own process by forkServers():
 * the starter's and the solution's API, the solution plus a `jti` deny-list, and a server-side
 * session in Redis. Each has its own Redis connection, counted, so the table can show Redis
 * commands per request.
 */
import express, { type Express } from 'express';
import type { Redis } from 'ioredis';
import { createRedisClient, resolveService, stopServices } from '@labs/services';
import { deleteByPrefix, listen, type Listening } from '@labs/test-kit';
import { createApp } from '../src/app.ts';
import { createKeyRing } from '../src/keys.ts';
import type { TokenService, TokenServiceOptions } from '../src/token-service.ts';
import { createTokenService as starterTokens } from '../src/tokens.ts';
import { createUserStore } from '../src/users.ts';
import { createTokenService as solutionTokens } from '../solution/tokens.ts';
import { withDenyList } from './deny-list.ts';
import { createSessionApp } from './session-store.ts';

export interface BenchServerOptions {
  prefix: string;
}

/** A Redis client that counts the commands it sends. */
function countingClient(url: string, counts: Record<string, number>, name: string): Redis {
  const client = createRedisClient(url);
  counts[name] = 0;
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    counts[name]! += 1;
    return send(...args);
  }) as Redis['sendCommand'];
  return client;
}

export async function start(options: BenchServerOptions) {
  const { prefix } = options;
  const { url: redisUrl } = await resolveService('redis');
  const counts: Record<string, number> = { 'password hashes': 0, 'login requests': 0 };
  const users = await createUserStore({
    onHash: () => {
      counts['password hashes']! += 1;
    },
  });
  const clients: Redis[] = [];
  const client = (name: string) => {
    const c = countingClient(redisUrl, counts, name);
    clients.push(c);
    return c;
  };
  const tokenApp = (
    name: string,
    build: (o: TokenServiceOptions) => TokenService,
    wrap = (t: TokenService, _r: Redis) => t,
  ) => {
    const keys = createKeyRing();
    const redis = client(name);
    const tokens = wrap(build({ redis, keys, prefix: `${prefix}${name}:` }), redis);
    // Counts login requests as they arrive, independently of the user store's hash counter.
    const app = express();
    app.use('/login', (_req, _res, next) => {
      counts['login requests']! += 1;
      next();
    });
    app.use(createApp({ tokens, users, keys }));
    return app;
  };
  const apps: Record<string, Express> = {
    starter: tokenApp('starter', starterTokens),
    solution: tokenApp('solution', solutionTokens),
    'solution + jti deny-list': tokenApp('solution + jti deny-list', solutionTokens, (t, r) =>
      withDenyList(t, r, `${prefix}deny:`),
    ),
    'server-side session': createSessionApp(client('server-side session'), users, `${prefix}session:`),
  };
  const servers: Listening[] = [];
  const urls: Record<string, string> = {};
  for (const [name, app] of Object.entries(apps)) {
    const server = await listen(app);
    servers.push(server);
    urls[name] = server.url;
  }
  return {
    urls,
    stats: () => ({ ...counts }),
    async close() {
      await Promise.all(servers.map((s) => s[Symbol.asyncDispose]()));
      if (clients[0]) await deleteByPrefix(clients[0], prefix);
      await Promise.all(clients.map((c) => c.quit()));
      await stopServices();
    },
  };
}
