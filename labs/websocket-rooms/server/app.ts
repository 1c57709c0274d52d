/**
 * The HTTP side of one instance: a health check, a readiness check, the counters, a demo login that
 * hands out tokens, and a small page to try the rooms in two browser tabs. WebSockets are the
 * gateway's (server/gateway.ts), attached to the same server's 'upgrade' event. createApp never listens.
 */
import type { Express } from 'express';
import { labApp, parseInput, sendProblem, z } from '@labs/lab-kit';
import { isRedisOutage } from '@labs/services';
import { type Gateway, RETRY_AFTER_SEC, WS_PATH } from './gateway.ts';
import { PAGE } from './page.ts';
import { issueToken, TOKEN_TTL_SEC } from './token.ts';

export interface AppDeps {
  gateway: Gateway;
  tokenSecret: string;
  /** Resolves when this instance's Redis connections answer; rejects (within a command timeout) when not. */
  checkRedis: () => Promise<unknown>;
  /**
   * Whether GET /api/token hands a token to anyone who asks (a stand-in for a real login, for `lab
   * serve` only: with it on, the token proves nothing about who the caller is).
   */
  demoLogin: boolean;
  /** Where an outage (at most a line every 5 s) and a bug behind a 500 are reported (default: the console). */
  log?: (message: string) => void;
}

const tokenQuery = z.object({
  user: z.string().regex(/^[A-Za-z0-9_-]{1,32}$/, 'must be 1-32 characters from A-Z, a-z, 0-9, _ and -'),
});

export function createApp(deps: AppDeps): Express {
  const outages = [{ test: isRedisOutage, service: 'Redis', retryAfterSec: RETRY_AFTER_SEC }];
  const { log } = deps;
  const logs = log && { log: (error: Error) => log(error.stack ?? error.message), logOutage: log };
  // GET /health (liveness) is the kit's: it stays 200 while Redis is away, since restarting this
  // instance would not bring Redis back, and its connected clients keep what works without it.
  return labApp({ name: 'websocket-rooms', outages, ...logs }, (app) => {
    // Readiness: whether this instance should get new connections. Without Redis it cannot reach members
    // on other instances nor resume anyone, so a load balancer that reads a 503 here sends new clients
    // elsewhere. A stalled Redis costs this request one command timeout, never the stall; the outage is
    // answered by the kit's problemHandler (503, Retry-After).
    app.get('/ready', async (_req, res) => {
      await deps.checkRedis();
      res.json({ ok: true });
    });
    app.get('/api/stats', (_req, res) => {
      res.json(deps.gateway.stats());
    });
    if (deps.demoLogin) {
      app.get('/', (_req, res) => {
        res.type('html').send(PAGE);
      });
      app.get('/api/token', (req, res) => {
        const query = parseInput(res, tokenQuery, req.query);
        if (!query) return;
        res.json({ token: issueToken(deps.tokenSecret, query.user), expiresInSec: TOKEN_TTL_SEC });
      });
    }
    // Reached only without an Upgrade header: upgrades go to the server's 'upgrade' event instead.
    app.all(WS_PATH, (_req, res) => {
      res.set('Upgrade', 'websocket');
      sendProblem(res, 426, `${WS_PATH} speaks WebSocket only: send an Upgrade: websocket handshake`, {
        title: 'Upgrade Required',
      });
    });
  });
}
