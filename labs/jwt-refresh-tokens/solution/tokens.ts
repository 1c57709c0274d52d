/**
 * SOLUTION: a short-lived access JWT plus an opaque, rotating refresh token checked against Redis.
 *
 * - The access token is a 5-minute RS256 JWT with `kid`, `typ: at+jwt`, `sid` (the session) and `jti`.
 *   Checking it costs no I/O, which is why it exists; the price is that it stays valid until it
 *   expires, so keep it short. The verifier pins RS256, finds the key by `kid`, requires iss, aud and
 *   typ, and allows 30 s of skew.
 * - The refresh token is `<family>.<generation>.<tag>`: the family is the session (one per login), the
 *   generation counts its rotations, and the tag is HMAC-SHA256(secret, family.generation), so only
 *   this server can make one and nothing secret is stored anywhere. Each use rotates it: the family's
 *   generation goes up by one and the caller gets the token of the new generation.
 * - A family is ONE Redis hash (user, status, current generation, when the last rotation happened,
 *   expiry), however often it refreshes: storage per session is constant. Keeping every rotated token
 *   instead grows by one record per refresh, ~4,000 per open tab over a 14-day lifetime.
 * - Reuse detection: a genuine token of an older generation means two parties hold the family (a thief
 *   and the user). The server cannot tell which is which, so it revokes the whole family. Because the
 *   tag proves the token was issued, a forged "old" token cannot revoke anybody's session.
 * - Racing tabs: the previous generation, presented within `refreshRaceGraceMs` of the rotation, gets
 *   the CURRENT token again instead of tripping reuse detection. A thief replaying inside that window
 *   gets it too; that is the accepted cost of a few seconds of grace. It is the same token, not a
 *   sibling, so the family never forks: whoever presents it after the other has rotated it is caught.
 * - One clock: expiry and the race grace are decided inside the Lua script with Redis's TIME, so app
 *   servers whose clocks disagree still agree about every token. (A spec passes `now` to move time
 *   without waiting; then the script uses that instead.) The script writes after reading TIME, which
 *   needs effects replication: Redis's default since 5.0, its only mode since 7.0.
 * - Logout revokes the family named by the access token's `sid`, even when that token has expired.
 * - Signing keys rotate by `kid`: a retired key verifies for `keyGraceSec` (default: one access-token
 *   lifetime plus skew, so no honest token outlives it), then nothing it signed is accepted.
 * - The secret: every instance needs the same one (REFRESH_SECRET). Changing it ends every session.
 */
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import { errors, jwtVerify, SignJWT, type JWTHeaderParameters } from 'jose';
import { TOKEN_DEFAULTS } from '../server/token-defaults.ts';
import {
  TokenError,
  type AccessClaims,
  type Credentials,
  type IssuedTokens,
  type TokenService,
  type TokenServiceOptions,
} from '../server/token-service.ts';

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

/**
 * Rotates a family atomically, so two requests can never both rotate the same generation, and a request
 * that read the family before a rotation can never write over it. KEYS: the family. ARGV: the generation
 * presented, now (ms, or ''), race grace (ms), refresh TTL (ms). Returns {verdict, userId}.
 */
const ROTATE = `${CLOCK}
local family = redis.call('HMGET', KEYS[1], 'status', 'user', 'generation', 'rotatedAt', 'expiresAt')
if not family[1] then return {'unknown'} end
if family[1] ~= 'active' then return {'revoked'} end
local now = clock(ARGV[2])
if tonumber(family[5]) <= now then return {'expired'} end
local presented = tonumber(ARGV[1])
local current = tonumber(family[3])
if presented == current then
  local ttl = tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'generation', current + 1, 'rotatedAt', string.format('%.0f', now),
    'expiresAt', string.format('%.0f', now + ttl))
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {'rotated', family[2]}
end
if presented > current then return {'unknown'} end
if presented == current - 1 and now - tonumber(family[4]) <= tonumber(ARGV[3]) then
  return {'raced', family[2]}
end
redis.call('HSET', KEYS[1], 'status', 'revoked', 'reason', 'reuse')
return {'reused'}
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
  rotateFamily(
    family: string,
    generation: number,
    now: number | '',
    raceGraceMs: number,
    ttlMs: number,
  ): Promise<[string, string?]>;
  revokeFamily(family: string, reason: string): Promise<number>;
}

function withScripts(redis: Redis): SessionRedis {
  // Mutation survivor: `if (true)` survives (its `if (false)` sibling is killed): defining the scripts again
  // on a client that has them changes nothing, ioredis replaces each command with the same script.
  // Stryker disable next-line StringLiteral: `'' in redis` is false, so the scripts are defined again: the same scripts
  if (!('rotateFamily' in redis)) {
    redis.defineCommand('startFamily', { numberOfKeys: 1, lua: START_FAMILY });
    redis.defineCommand('rotateFamily', { numberOfKeys: 1, lua: ROTATE });
    redis.defineCommand('revokeFamily', { numberOfKeys: 1, lua: REVOKE });
  }
  return redis as SessionRedis;
}

export function createTokenService(options: TokenServiceOptions): TokenService {
  const { prefix, keys } = options;
  const redis = withScripts(options.redis);
  const now = options.now ?? Date.now;
  // What the scripts decide time with: the caller's clock if it passed one (a spec), else Redis's.
  // Stryker disable next-line StringLiteral: any text that is not a number makes the scripts read Redis's clock, as '' does
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

  /**
   * The family and generation of a token this server issued; undefined for anything else. The tag's last
   * character must be one of the sixteen that can end 32 bytes of base64url: its two low bits are
   * padding no decoder reads, so three other characters would decode to the same tag, and an edited
   * copy of an old token would count as that token (and end its session as a reuse).
   */
  function parseRefreshToken(token: string): { family: string; generation: number } | undefined {
    const match = /^([0-9a-f-]{36})\.(0|[1-9]\d{0,14})\.([\w-]{42}[AEIMQUYcgkosw048])$/.exec(token);
    if (!match) return undefined;
    // Stryker disable next-line StringLiteral: the pattern matched, so every group has a value; the defaults only satisfy the type
    const [, family = '', digits = '', tag = ''] = match;
    const generation = Number(digits);
    const expected = tagOf(family, generation);
    const given = Buffer.from(tag, 'base64url');
    // Mutation survivor: `true` for the length check survives: the pattern admits only tags that decode to 32
    // bytes, the HMAC's length. The check stays for timingSafeEqual, which throws on unequal lengths.
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

  /** The verification key for a header: found by `kid`, and only while it is current or in grace. */
  function keyFor(header: JWTHeaderParameters) {
    // Mutation survivor: `false` for `header.kid === undefined` survives: keys.find(undefined) finds no key either.
    const key = header.kid === undefined ? undefined : keys.find(header.kid);
    // Mutation survivor: `if (false)` survives: `key.retiredAt` below then throws a TypeError, which verifyAccess
    // answers with the same 401 'invalid' (only the detail's wording differs, and no client reads wording).
    if (!key) throw new TokenError('invalid', 'The access token was signed by an unknown key');
    // Mutation survivors: `true` for `retiredAt !== undefined` (undefined + grace is NaN: the comparison is
    // false), and `>=` for `>`: at the grace's last millisecond every honest token of the key has expired
    // already (the default grace is its lifetime plus the tolerance), so only a forgery's answer moves by 1 ms.
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
      // Mutation survivor: `if (false)` survives: keyFor's TokenError (an unknown or retired key) is then wrapped
      // as 'invalid', the code it had; only the detail's wording differs.
      if (error instanceof TokenError) throw error;
      if (error instanceof errors.JWTExpired)
        throw new TokenError('expired', 'The access token has expired', { cause: error });
      // Stryker disable next-line ObjectLiteral: nothing reads this cause (sessionOf reads a JWTExpired's only); it is for whoever debugs
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
      const [verdict, userId] = await redis.rotateFamily(
        familyKey(token.family),
        token.generation,
        storeNow(),
        raceGraceMs,
        refreshTtlMs,
      );
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
      // Stryker disable next-line StringLiteral: the reason is kept for someone reading Redis; no code reads it
      await redis.revokeFamily(familyKey(family), 'logout');
    },
  };
}
