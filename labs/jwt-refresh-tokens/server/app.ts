/**
 * The API: POST /login, GET /me, POST /refresh, POST /logout, and the public keys. Routes, validation
 * (zod, through the kit's `parseInput`) and cookies live here; every token decision is made by the
 * TokenService (src/tokens.ts, the part the learner edits). createApp never listens: `server/lab.ts`
 * builds it. Errors are RFC 9457 problems (`application/problem+json`).
 */
import cookieParser from 'cookie-parser';
import type { CookieOptions, Express, Request, Response } from 'express';
import { bearerToken, labApp, loginInput, parseInput, sendProblem, z } from '@labs/lab-kit';
import { isRedisOutage } from '@labs/services';
import type { KeyRing } from './keys.ts';
import { TokenError, type Credentials, type IssuedTokens, type TokenService } from './token-service.ts';
import { toPublic, type UserStore } from './users.ts';

/** The refresh cookie's name. (`__Host-` would forbid the narrow Path below, so no prefix.) */
export const REFRESH_COOKIE = 'refresh_token';

/**
 * httpOnly: page scripts (and so XSS) cannot read it. Secure: never sent over plain HTTP (browsers
 * make an exception for localhost). SameSite=Strict: not sent on requests started by other sites,
 * which is the CSRF defence. Path=/refresh: not sent with any other request, so it travels rarely.
 */
export const REFRESH_COOKIE_OPTIONS: CookieOptions = {
  httpOnly: true,
  secure: true,
  sameSite: 'strict',
  path: '/refresh',
};

/** `{ "username", "password" }`: the username trimmed, both bounded (nobody makes us hash a megabyte). */
export const loginBody = loginInput();

/**
 * What a request presents, from `{ authorization: req.get('authorization'), refreshCookie: <cookie> }`.
 * A refresh cookie that is empty or not text (cookie-parser turns `j:{...}` into an object) counts as
 * absent: the token code then answers 401, as for no cookie at all.
 */
const credentialsInput: z.ZodType<Credentials> = z
  .object({
    authorization: bearerToken(), // absent is fine (undefined), malformed is a 400
    refreshCookie: z.unknown().transform((value) => (typeof value === 'string' && value !== '' ? value : undefined)),
  })
  .transform(({ authorization, refreshCookie }) => ({ accessToken: authorization, refreshToken: refreshCookie }));

/** One answer for every login failure, so it never says whether the username exists. */
export function refuseLogin(res: Response): void {
  sendProblem(res, 401, 'Wrong username or password', { code: 'invalid_credentials' });
}

export function createApp(tokens: TokenService, users: UserStore, keys: KeyRing): Express {
  // Redis down or too slow is not a bug: a 503 with Retry-After, which a client can act on. Anything
  // else (a ReplyError from a broken script, a TypeError) is a bug: a 500, logged.
  const outages = [{ test: isRedisOutage, service: 'The session store', retryAfterSec: 1 }];
  return labApp({ name: 'jwt-refresh-tokens', json: { limit: '4kb' }, outages }, (app) => {
    app.use(cookieParser());
    // Public keys for other services that verify our tokens; a retired key stays listed only during its grace.
    app.get('/.well-known/jwks.json', async (_req, res) => {
      res.json(await keys.jwks());
    });

    app.post('/login', async (req, res) => {
      const body = parseInput(res, loginBody, req.body);
      if (!body) return;
      const user = await users.verifyCredentials(body.username, body.password);
      if (!user) return refuseLogin(res);
      return sendTokens(res, await tokens.issue(user.id));
    });

    app.get('/me', async (req, res) => {
      const credentials = credentialsOf(req, res);
      if (!credentials) return;
      if (!credentials.accessToken)
        return unauthorized(res, new TokenError('missing', 'Send an access token: Authorization: Bearer <token>'));
      try {
        const claims = await tokens.verifyAccess(credentials.accessToken);
        const user = users.findById(claims.sub);
        if (!user) return unauthorized(res, new TokenError('invalid', 'The user of this token no longer exists'));
        return res.json({ user: toPublic(user), session: claims.sid ?? null, expiresAt: claims.exp });
      } catch (error) {
        return unauthorized(res, error);
      }
    });

    app.post('/refresh', async (req, res) => {
      const credentials = credentialsOf(req, res);
      if (!credentials) return;
      try {
        return sendTokens(res, await tokens.refresh(credentials));
      } catch (error) {
        // A refused token is dead: drop it. Any other error keeps the cookie (Redis down is a 503), so a
        // passing outage does not log the user out.
        if (error instanceof TokenError) res.clearCookie(REFRESH_COOKIE, REFRESH_COOKIE_OPTIONS);
        return unauthorized(res, error);
      }
    });

    app.post('/logout', async (req, res) => {
      const credentials = credentialsOf(req, res);
      if (!credentials) return;
      // Whatever happens next, the browser forgets the refresh cookie: page scripts cannot delete an
      // httpOnly cookie, so only a response can (its Path is /refresh, but any response may clear it).
      res.clearCookie(REFRESH_COOKIE, REFRESH_COOKIE_OPTIONS);
      try {
        await tokens.logout(credentials);
        return res.status(204).end();
      } catch (error) {
        return unauthorized(res, error);
      }
    });
  });

  function sendTokens(res: Response, issued: IssuedTokens) {
    if (issued.refreshToken) {
      res.cookie(REFRESH_COOKIE, issued.refreshToken, {
        ...REFRESH_COOKIE_OPTIONS,
        maxAge: (issued.refreshExpiresInSec ?? 0) * 1000,
      });
    }
    res.set('Cache-Control', 'no-store');
    return res.json({ accessToken: issued.accessToken, tokenType: 'Bearer', expiresIn: issued.expiresInSec });
  }
}

/** The bearer token and the refresh cookie of a request; answers 400 itself when the header is malformed. */
function credentialsOf(req: Request, res: Response): Credentials | undefined {
  return parseInput(res, credentialsInput, {
    authorization: req.get('authorization'),
    refreshCookie: req.cookies?.[REFRESH_COOKIE],
  });
}

/**
 * 401 for a refused token, with the RFC 6750 challenge header and the TokenError's `code` (`expired`,
 * `reused`, ...) as a problem member; other errors go on to the error handlers.
 */
function unauthorized(res: Response, error: unknown): void {
  if (!(error instanceof TokenError)) throw error;
  const challenge = error.code === 'missing' ? '' : ', error="invalid_token"';
  res.set('WWW-Authenticate', `Bearer realm="backend-labs"${challenge}`);
  sendProblem(res, 401, error.message, { code: error.code });
}
