/**
 * WRONG FIX: the solution's rules for rotation, run in JavaScript: HMGET the family, decide, then
 * write the new generation with MULTI.
 *
 * MULTI makes the write atomic, not the decision: between the read and the write anything may happen.
 * A request that stalls there (a GC pause, a slow network, a lost packet) writes back a generation
 * decided on from an old read. If the user rotated twice meanwhile, the family is set back to a
 * generation that was already used, the stalled request gets a live token for it, and two lines of
 * tokens are alive in one family: reuse detection no longer sees the thief. Racing tabs still get one
 * successor, so no test of two simultaneous refreshes notices. The check and the write must be one
 * step on the server (a Lua script; or WATCH on a connection of its own).
 *
 * @catches a refresh held up between its read and its write cannot revive a token rotated since
 */
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { errors, jwtVerify, SignJWT, type JWTHeaderParameters } from 'jose';
import { TOKEN_DEFAULTS } from '../../server/token-defaults.ts';
import {
  TokenError,
  type AccessClaims,
  type Credentials,
  type IssuedTokens,
  type TokenService,
  type TokenServiceOptions,
} from '../../server/token-service.ts';

/** Epoch ms: ARGV's value when the caller passed a clock, otherwise Redis's own (TIME). */
const CLOCK = `
local function clock(given)
  local now = tonumber(given)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/** KEYS: the family. ARGV: user, now (ms, or '' for Redis's clock), refresh TTL (ms). */
const START_FAMILY = `${CLOCK}
local now = clock(ARGV[2])
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'active', 'user', ARGV[1], 'generation', 0,
  'createdAt', string.format('%.0f', now), 'expiresAt', string.format('%.0f', now + ttl))
redis.call('PEXPIRE', KEYS[1], ttl)
`;

/** KEYS: the family. ARGV: the reason. Marks it revoked if it still exists; its TTL stays as it was. */
const REVOKE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'revoked', 'reason', ARGV[1])
return 1
`;

/** The Redis client with the scripts defined as commands (ioredis runs them by EVALSHA, reloading on NOSCRIPT). */
interface SessionRedis extends Redis {
  startFamily(family: string, userId: string, now: number | '', ttlMs: number): Promise<unknown>;
  revokeFamily(family: string, reason: string): Promise<number>;
}

function withScripts(redis: Redis): SessionRedis {
  if (!('startFamily' in redis)) {
    redis.defineCommand('startFamily', { numberOfKeys: 1, lua: START_FAMILY });
    redis.defineCommand('revokeFamily', { numberOfKeys: 1, lua: REVOKE });
  }
  return redis as SessionRedis;
}

export function createTokenService(options: TokenServiceOptions): TokenService {
  const { prefix, keys } = options;
  const redis = withScripts(options.redis);
  const now = options.now ?? Date.now;
  // What the scripts decide time with: the caller's clock if it passed one (a spec), else Redis's.
  const storeNow = (): number | '' => (options.now ? options.now() : '');
  const accessTtlSec = options.accessTtlSec ?? TOKEN_DEFAULTS.accessTtlSec;
  const refreshTtlMs = (options.refreshTtlSec ?? TOKEN_DEFAULTS.refreshTtlSec) * 1000;
  const clockToleranceSec = options.clockToleranceSec ?? TOKEN_DEFAULTS.clockToleranceSec;
  const keyGraceMs = (options.keyGraceSec ?? accessTtlSec + clockToleranceSec) * 1000;
  const raceGraceMs = options.refreshRaceGraceMs ?? TOKEN_DEFAULTS.refreshRaceGraceMs;
  const { issuer = TOKEN_DEFAULTS.issuer, audience = TOKEN_DEFAULTS.audience } = options;
  // Without a configured secret, one per process: fine for one instance, wrong for several.
  const refreshSecret = options.refreshSecret ?? randomBytes(32).toString('base64url');

  const familyKey = (family: string) => `${prefix}family:${family}`;
  const tagOf = (family: string, generation: number) =>
    createHmac('sha256', refreshSecret).update(`${family}.${generation}`).digest();
  const refreshTokenFor = (family: string, generation: number) =>
    `${family}.${generation}.${tagOf(family, generation).toString('base64url')}`;

  /** The family and generation of a token this server issued; undefined for anything else. */
  function parseRefreshToken(token: string): { family: string; generation: number } | undefined {
    const match = /^([0-9a-f-]{36})\.(0|[1-9]\d{0,14})\.([\w-]{43})$/.exec(token);
    if (!match) return undefined;
    const [, family = '', digits = '', tag = ''] = match;
    const generation = Number(digits);
    const expected = tagOf(family, generation);
    const given = Buffer.from(tag, 'base64url');
    return given.length === expected.length && timingSafeEqual(given, expected) ? { family, generation } : undefined;
  }

  async function signAccess(userId: string, sessionId: string): Promise<string> {
    const iat = Math.floor(now() / 1000);
    const key = keys.current();
    return new SignJWT({ sid: sessionId })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
      .setSubject(userId)
      .setIssuer(issuer)
      .setAudience(audience)
      .setIssuedAt(iat)
      .setExpirationTime(iat + accessTtlSec)
      .setJti(randomUUID())
      .sign(key.privateKey);
  }

  async function tokensFor(userId: string, family: string, generation: number): Promise<IssuedTokens> {
    return {
      accessToken: await signAccess(userId, family),
      expiresInSec: accessTtlSec,
      refreshToken: refreshTokenFor(family, generation),
      refreshExpiresInSec: refreshTtlMs / 1000,
    };
  }

  /** Redis's clock, asked for in a round trip of its own (or the spec's clock). */
  async function clock(): Promise<number> {
    if (options.now) return options.now();
    const [seconds, micros] = await redis.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  }

  /** The script's rules, in JavaScript: read the family, decide, write. */
  async function rotateFamily(key: string, generation: number): Promise<[string, string?]> {
    const time = await clock();
    const [status, user, current, rotatedAt, expiresAt] = await redis.hmget(
      key,
      'status',
      'user',
      'generation',
      'rotatedAt',
      'expiresAt',
    );
    if (!status) return ['unknown'];
    if (status !== 'active') return ['revoked'];
    if (Number(expiresAt) <= time) return ['expired'];
    const latest = Number(current);
    if (generation === latest) {
      await redis
        .multi()
        .hset(key, 'generation', latest + 1, 'rotatedAt', time, 'expiresAt', time + refreshTtlMs)
        .pexpire(key, refreshTtlMs)
        .exec();
      return ['rotated', user!];
    }
    if (generation > latest) return ['unknown'];
    if (generation === latest - 1 && time - Number(rotatedAt) <= raceGraceMs) return ['raced', user!];
    await redis.hset(key, 'status', 'revoked', 'reason', 'reuse');
    return ['reused'];
  }

  /** The verification key for a header: found by `kid`, and only while it is current or in grace. */
  function keyFor(header: JWTHeaderParameters) {
    const key = header.kid === undefined ? undefined : keys.find(header.kid);
    if (!key) throw new TokenError('invalid', 'The access token was signed by an unknown key');
    if (key.retiredAt !== undefined && now() > key.retiredAt + keyGraceMs) {
      throw new TokenError('invalid', 'The access token was signed by a retired key');
    }
    return key.publicKey;
  }

  async function verifyAccess(token: string): Promise<AccessClaims> {
    try {
      const { payload } = await jwtVerify(token, keyFor, {
        algorithms: ['RS256'], // pinned: say what you accept, even where jose would refuse the rest anyway
        issuer, // a token from another issuer (a staging login, a partner) is not ours
        audience, // a token our issuer made for another API is not for this one
        typ: 'at+jwt', // an ID token or a reset-link token signed by the same key is not an access token
        currentDate: new Date(now()),
        clockTolerance: clockToleranceSec,
        requiredClaims: ['sub', 'sid', 'exp', 'iat'],
      });
      return { sub: payload.sub!, sid: String(payload.sid), exp: payload.exp! };
    } catch (error) {
      if (error instanceof TokenError) throw error;
      if (error instanceof errors.JWTExpired)
        throw new TokenError('expired', 'The access token has expired', { cause: error });
      throw new TokenError('invalid', 'The access token is not valid', { cause: error });
    }
  }

  /**
   * The session an access token names, for logout. An expired token still counts: the user who was idle
   * past its few minutes must be able to end the session (the refresh cookie never reaches /logout).
   * jose checks exp last, after the signature, key, iss, aud, typ and required claims, so the payload of
   * its JWTExpired error has passed every other check.
   */
  async function sessionOf(accessToken: string): Promise<string | undefined> {
    try {
      return (await verifyAccess(accessToken)).sid;
    } catch (error) {
      if (error instanceof TokenError && error.cause instanceof errors.JWTExpired)
        return String(error.cause.payload.sid);
      throw error;
    }
  }

  return {
    verifyAccess,

    async issue(userId) {
      const family = randomUUID();
      await redis.startFamily(familyKey(family), userId, storeNow(), refreshTtlMs);
      return tokensFor(userId, family, 0);
    },

    async refresh({ refreshToken }: Credentials) {
      // Only the cookie counts: an access token, even a valid one, never extends a session.
      if (!refreshToken) throw new TokenError('missing', 'No refresh token: log in first');
      const token = parseRefreshToken(refreshToken);
      if (!token) throw new TokenError('invalid', 'Unknown refresh token: log in again');
      const [verdict, userId] = await rotateFamily(familyKey(token.family), token.generation);
      switch (verdict) {
        case 'rotated':
        case 'raced':
          // Both answer with the generation after the one presented: for a racing tab, the current one.
          return tokensFor(userId!, token.family, token.generation + 1);
        case 'reused':
          throw new TokenError('reused', 'This refresh token was already used; the session is revoked, log in again');
        case 'revoked':
          throw new TokenError('revoked', 'The session has ended: log in again');
        case 'expired':
          throw new TokenError('expired', 'The refresh token has expired: log in again');
        default:
          throw new TokenError('invalid', 'Unknown refresh token: log in again');
      }
    },

    async logout({ accessToken, refreshToken }: Credentials) {
      let family = refreshToken ? parseRefreshToken(refreshToken)?.family : undefined;
      if (!family && accessToken) family = await sessionOf(accessToken);
      if (!family) throw new TokenError('missing', 'Send the access token (or the refresh cookie) to log out');
      // The access tokens already out stay valid until they expire (at most accessTtlSec). A deny-list
      // of `jti`s would close that gap, at the price of a Redis lookup on every request.
      await redis.revokeFamily(familyKey(family), 'logout');
    },
  };
}
