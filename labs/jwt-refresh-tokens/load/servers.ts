/**
 * The servers the load script measures, started in their own process by forkServers():
 * the starter's API (and the learner's, as "your code", when src/ was edited), the solution's, the solution plus a `jti` deny-list, and a server-side
 * session in Redis. Each has its own Redis connection, counted, so the table can show Redis
 * commands per request.
 */
import type { RequestListener } from 'node:http';
import express from 'express';
import type { Redis } from 'ioredis';
import { starterVersions } from '@labs/bench';
import { openLab } from '@labs/lab-kit';
import { stopServices } from '@labs/services';
import jwtLab from '../server/lab.ts';
import type { TokenService, TokenServiceOptions } from '../server/token-service.ts';
import { createUserStore } from '../server/users.ts';
import { createTokenService as solutionTokens } from '../solution/tokens.ts';
import { withDenyList } from './deny-list.ts';
import { createSessionApp } from './session-store.ts';

/** Makes `client` count the commands it sends, under `name`. */
function countCommands(client: Redis, counts: Record<string, number>, name: string): Redis {
  counts[name] = 0;
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    counts[name]! += 1;
    return send(...args);
  }) as Redis['sendCommand'];
  return client;
}

export async function start() {
  // One context for every target: one Redis, clients closed and keys deleted when the run ends.
  const lab = await openLab(jwtLab, { purpose: 'bench' });
  const { prefix } = lab.context;
  const counts: Record<string, number> = { 'password hashes': 0, 'login requests': 0 };
  const users = await createUserStore({
    onHash: () => {
      counts['password hashes']! += 1;
    },
  });
  const client = async (name: string) => countCommands(await lab.context.redis(), counts, name);
  /** The lab's API with `createTokenService` as its token code, on a counted client of its own. */
  const tokenApp = async (name: string, createTokenService: (options: TokenServiceOptions) => TokenService) => {
    const built = await jwtLab.build(lab.context, {
      users,
      redis: await client(name),
      prefix: `${prefix}${name}:`,
      createTokenService,
    });
    // Counts login requests as they arrive, independently of the user store's hash counter.
    const app = express();
    app.use('/login', (_req, _res, next) => {
      counts['login requests']! += 1;
      next();
    });
    app.use(built.app);
    return app;
  };
  // The committed starter, and the learner's src/ beside it as "your code" when they have edited it.
  const starters = await starterVersions(
    new URL('../src/tokens.ts', import.meta.url),
    (url) => import(url.href) as Promise<typeof import('../src/tokens.ts')>,
  );
  const apps: Record<string, RequestListener> = {};
  for (const { name, module } of starters) apps[name] = await tokenApp(name, module.createTokenService);
  Object.assign(apps, {
    solution: await tokenApp('solution', solutionTokens),
    'solution + jti deny-list': await tokenApp('solution + jti deny-list', (options) =>
      withDenyList(solutionTokens(options), options.redis, `${prefix}deny:`),
    ),
    'server-side session': createSessionApp(await client('server-side session'), users, `${prefix}session:`),
  });
  const urls: Record<string, string> = {};
  for (const [name, app] of Object.entries(apps)) urls[name] = (await lab.context.listen(app)).url;
  return { urls, stats: () => ({ ...counts }), close: () => lab.close().then(stopServices) };
}
