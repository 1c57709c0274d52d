/**
 * WRONG FIX: a record per refresh token, deleted as soon as it is rotated, to keep storage bounded.
 *
 * The storage stays small, but the server forgets every token it rotated: a stolen token replayed
 * later is merely "unknown", refused without revoking anything, so the thief's visit goes unnoticed
 * and the family lives on; and a second tab refreshing a moment after the first finds its token gone
 * and is logged out. Bounded storage must still recognise every older token of a family as reuse.
 *
 * @catches a replayed refresh token gets a 401 and revokes the whole family
 * @catches two tabs refreshing at once both stay logged in
 */
import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
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

/**
 * Rotates one refresh token atomically, so two concurrent requests can never both see it "active".
 * KEYS: the token, its family, its successor. ARGV: now (ms, or '' for Redis's clock), race grace (ms),
 * refresh TTL (ms). Returns {verdict, userId}.
 */
const ROTATE = `
local token = redis.call('HMGET', KEYS[1], 'status', 'rotatedAt', 'expiresAt', 'user', 'family')
if not token[1] then return {'unknown'} end
if redis.call('HGET', KEYS[2], 'status') ~= 'active' then return {'revoked'} end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if tonumber(token[3]) <= now then return {'expired'} end
if token[1] == 'active' then
  local ttl = tonumber(ARGV[3])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[3], 'status', 'active', 'user', token[4], 'family', token[5], 'expiresAt', string.format('%.0f', now + ttl))
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  return {'rotated', token[4]}
end
if now - tonumber(token[2]) <= tonumber(ARGV[2]) then return {'raced', token[4]} end
redis.call('HSET', KEYS[2], 'status', 'revoked', 'reason', 'reuse')
return {'reused'}
`;

/** The Redis client with ROTATE defined as a command (ioredis runs it by EVALSHA, reloading it on NOSCRIPT). */
interface RotatingRedis extends Redis {
  rotateRefreshToken(
    token: string,
    family: string,
    successor: string,
    now: number | '',
    raceGraceMs: number,
    ttlMs: number,
  ): Promise<[string, string?]>;
}

export function createTokenService(options: TokenServiceOptions): TokenService {
  const { prefix, keys, now = Date.now } = options;
  if (!('rotateRefreshToken' in options.redis))
    options.redis.defineCommand('rotateRefreshToken', { numberOfKeys: 3, lua: ROTATE });
  const redis = options.redis as RotatingRedis;
  const accessTtlSec = options.accessTtlSec ?? TOKEN_DEFAULTS.accessTtlSec;
  const refreshTtlMs = (options.refreshTtlSec ?? TOKEN_DEFAULTS.refreshTtlSec) * 1000;
  const clockToleranceSec = options.clockToleranceSec ?? TOKEN_DEFAULTS.clockToleranceSec;
  const keyGraceMs = (options.keyGraceSec ?? accessTtlSec + clockToleranceSec) * 1000;
  const raceGraceMs = options.refreshRaceGraceMs ?? TOKEN_DEFAULTS.refreshRaceGraceMs;
  const { issuer = TOKEN_DEFAULTS.issuer, audience = TOKEN_DEFAULTS.audience } = options;
  // Without a configured secret, one per process: fine for one instance, wrong for several.
  const refreshSecret = options.refreshSecret ?? randomBytes(32).toString('base64url');

  const tokenKey = (token: string) => `${prefix}rt:${createHash('sha256').update(token).digest('base64url')}`;
  const familyKey = (family: string) => `${prefix}family:${family}`;
  const successorOf = (token: string) => createHmac('sha256', refreshSecret).update(token).digest('base64url');

  /** The spec's clock, or Redis's: one clock for every instance. */
  async function storeTime(): Promise<number> {
    if (options.now) return options.now();
    const [seconds, micros] = await redis.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
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

  async function tokensFor(userId: string, sessionId: string, refreshToken: string): Promise<IssuedTokens> {
    return {
      accessToken: await signAccess(userId, sessionId),
      expiresInSec: accessTtlSec,
      refreshToken,
      refreshExpiresInSec: refreshTtlMs / 1000,
    };
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
        algorithms: ['RS256'], // pinned: `none`, HS256 and anything else fail before a key is chosen
        issuer,
        audience,
        typ: 'at+jwt',
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

  async function revokeFamily(family: string, reason: string): Promise<void> {
    // A tombstone that outlives every token of the family, so none of them can be used again.
    await redis
      .multi()
      .hset(familyKey(family), 'status', 'revoked', 'reason', reason)
      .pexpire(familyKey(family), refreshTtlMs)
      .exec();
  }

  return {
    verifyAccess,

    async issue(userId) {
      const family = randomUUID();
      const refreshToken = randomBytes(32).toString('base64url');
      const time = await storeTime();
      await redis
        .multi()
        .hset(familyKey(family), 'status', 'active', 'user', userId, 'createdAt', time)
        .pexpire(familyKey(family), refreshTtlMs)
        .hset(
          tokenKey(refreshToken),
          'status',
          'active',
          'user',
          userId,
          'family',
          family,
          'expiresAt',
          time + refreshTtlMs,
        )
        .pexpire(tokenKey(refreshToken), refreshTtlMs)
        .exec();
      return tokensFor(userId, family, refreshToken);
    },

    async refresh({ refreshToken }: Credentials) {
      // Only the cookie counts: an access token, even a valid one, never extends a session.
      if (!refreshToken) throw new TokenError('missing', 'No refresh token: log in first');
      const family = await redis.hget(tokenKey(refreshToken), 'family');
      if (!family) throw new TokenError('invalid', 'Unknown refresh token: log in again');
      const successor = successorOf(refreshToken);
      const [verdict, userId] = await redis.rotateRefreshToken(
        tokenKey(refreshToken),
        familyKey(family),
        tokenKey(successor),
        options.now ? options.now() : '',
        raceGraceMs,
        refreshTtlMs,
      );
      switch (verdict) {
        case 'rotated':
        case 'raced':
          return tokensFor(userId!, family, successor);
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
      let family: string | null | undefined;
      if (refreshToken) family = await redis.hget(tokenKey(refreshToken), 'family');
      if (!family && accessToken) family = await sessionOf(accessToken);
      if (!family) throw new TokenError('missing', 'Send the access token (or the refresh cookie) to log out');
      // The access tokens already out stay valid until they expire (at most accessTtlSec). A deny-list
      // of `jti`s would close that gap, at the price of a Redis lookup on every request.
      await revokeFamily(family, 'logout');
    },
  };
}
