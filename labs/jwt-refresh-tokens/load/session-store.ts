/**
 * The other side of "session vs token": a classic server-side session. Login stores the session in
 * Redis under a random id and sets that id as a cookie; every request looks it up; logout deletes it.
 * Only the load script uses it, as the baseline a JWT is usually compared with.
 */
import { randomBytes } from 'node:crypto';
import cookieParser from 'cookie-parser';
import express, { type Express } from 'express';
import type { Redis } from 'ioredis';
import { notFound, parseInput, problemHandler, sendProblem } from '@labs/lab-kit';
import { loginBody, refuseLogin } from '../server/app.ts';
import { toPublic, type UserStore } from '../server/users.ts';

const SESSION_TTL_SEC = 14 * 24 * 60 * 60;

export function createSessionApp(redis: Redis, users: UserStore, prefix: string): Express {
  const key = (id: string) => `${prefix}session:${id}`;
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '4kb' }));
  app.use(cookieParser());

  app.post('/login', async (req, res) => {
    const body = parseInput(res, loginBody, req.body);
    if (!body) return;
    const user = await users.verifyCredentials(body.username, body.password);
    if (!user) return refuseLogin(res);
    const id = randomBytes(32).toString('base64url');
    await redis.set(key(id), user.id, 'EX', SESSION_TTL_SEC);
    res.cookie('sid', id, { httpOnly: true, secure: true, sameSite: 'lax', path: '/' });
    return res.json({ ok: true });
  });

  app.get('/me', async (req, res) => {
    const id: unknown = req.cookies?.sid;
    const userId = typeof id === 'string' ? await redis.get(key(id)) : null; // one round trip per request
    const user = userId ? users.findById(userId) : undefined;
    if (!user) return sendProblem(res, 401, 'Log in first', { code: 'invalid_session' });
    return res.json({ user: toPublic(user), session: 'server-side' });
  });

  app.post('/logout', async (req, res) => {
    const id: unknown = req.cookies?.sid;
    if (typeof id === 'string') await redis.del(key(id)); // revocation: immediate, one command
    res.clearCookie('sid', { path: '/' });
    return res.status(204).end();
  });
  app.use(notFound);
  app.use(problemHandler((error) => console.error(`[server-side session] ${error.message}`)));
  return app;
}
