/**
 * The API: POST /login, GET /me, POST /refresh, POST /logout, and the public keys. Routes, validation
 * and cookies live here; every token decision is made by the TokenService (src/tokens.ts, the part
 * the learner edits). createApp never listens; tests and the load script start it on port 0.
 */
import cookieParser from 'cookie-parser';
import express, {
  type CookieOptions,
  type ErrorRequestHandler,
  type Express,
  type Request,
  type Response,
} from 'express';
import type { KeyRing } from './keys.ts';
import { TokenError, type Credentials, type IssuedTokens, type TokenService } from './token-service.ts';
import { toPublic, type UserStore } from './users.ts';
import { bearerToken, parseLoginBody } from './validation.ts';

export interface AppDeps {
  tokens: TokenService;
  users: UserStore;
  keys: KeyRing;
  /** Called with unexpected errors (a 500); defaults to console.error. */
  onError?: (error: unknown) => void;
}

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

/** One body for every login failure, so it never says whether the username exists. */
export const INVALID_CREDENTIALS = { error: 'invalid_credentials', message: 'Wrong username or password' } as const;

export function createApp(deps: AppDeps): Express {
  const { tokens, users, keys, onError = (error) => console.error(error) } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '4kb' }));
  app.use(cookieParser());

  app.get('/health', (_req, res) => {
    res.json({ ok: true });
  });

  // Public keys for other services that verify our tokens; a retired key stays listed only during its grace.
  app.get('/.well-known/jwks.json', async (_req, res) => {
    res.json(await keys.jwks());
  });

  app.post('/login', async (req, res) => {
    const body = parseLoginBody(req.body);
    if (!body.ok) return badRequest(res, body.error);
    const user = await users.verifyCredentials(body.value.username, body.value.password);
    if (!user) return res.status(401).json(INVALID_CREDENTIALS);
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
      // A refused token is dead: drop it. Any other error (Redis down) is a 500 that keeps the cookie,
      // so a passing outage does not log the user out.
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

  const errorHandler: ErrorRequestHandler = (error, _req, res, _next) => {
    const status = typeof error?.status === 'number' ? error.status : 500;
    if (error?.type === 'entity.parse.failed') return badRequest(res, 'The body is not valid JSON');
    if (status >= 400 && status < 500)
      return res.status(status).json({ error: 'bad_request', message: String(error.message) });
    onError(error);
    return res.status(500).json({ error: 'internal', message: 'Something went wrong on our side' });
  };
  app.use(errorHandler);
  return app;

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
  const bearer = bearerToken(req.get('authorization'));
  if (!bearer.ok) {
    badRequest(res, bearer.error);
    return undefined;
  }
  const cookie: unknown = req.cookies?.[REFRESH_COOKIE];
  return { accessToken: bearer.value, refreshToken: typeof cookie === 'string' && cookie !== '' ? cookie : undefined };
}

function badRequest(res: Response, message: string) {
  return res.status(400).json({ error: 'bad_request', message });
}

/** 401 for a refused token, with the RFC 6750 challenge header; other errors go to the error handler. */
function unauthorized(res: Response, error: unknown) {
  if (!(error instanceof TokenError)) throw error;
  const code = error.code === 'missing' ? '' : ', error="invalid_token"';
  res.set('WWW-Authenticate', `Bearer realm="backend-labs"${code}`);
  return res.status(401).json({ error: error.code, message: error.message });
}
