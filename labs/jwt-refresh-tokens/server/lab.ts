/**
 * The JWT refresh tokens lab, described once: `lab serve`, the spec and the load script all start it
 * from here. Config: ACCESS_TTL_SEC (default 300), REFRESH_SECRET (default: a random one per process).
 */
import type { Redis } from 'ioredis';
import { createTokenService } from '#tokens';
import { defineLab, wholeNumber, z } from '@labs/lab-kit';
import { createApp } from './app.ts';
import { createKeyRing, type KeyRing } from './keys.ts';
import { TOKEN_DEFAULTS } from './token-defaults.ts';
import type { TokenService, TokenServiceOptions } from './token-service.ts';
import { createUserStore, DEMO_USERS, type UserStore } from './users.ts';

/** An access token that lives longer than a day is no longer short-lived; that is what refresh is for. */
const MAX_ACCESS_TTL_SEC = 86_400;
/** 32 characters of base64 are 192 bits: too many to guess, even for someone holding an old token. */
const MIN_REFRESH_SECRET_LENGTH = 32;

export interface JwtLabConfig {
  ACCESS_TTL_SEC: number;
  REFRESH_SECRET?: string;
}

/** What a spec or load script may set instead of the configuration. */
export interface JwtLabOptions {
  /**
   * A fake clock (epoch ms) for the tokens and, unless `keys` is given, the key ring. Without it the
   * token code reads the app server's clock for JWTs and Redis's clock for what it keeps in Redis.
   */
  now: () => number;
  /** The caller's key ring (a spec rotates it); default: a new one on `now`. */
  keys: KeyRing;
  accessTtlSec: number;
  /** How long a refresh token lives unused (default: TOKEN_DEFAULTS.refreshTtlSec); a spec shortens it. */
  refreshTtlSec: number;
  clockToleranceSec: number;
  /** The user store; default: the demo users (hashing them takes a moment, so a spec builds one). */
  users: UserStore;
  /** A Redis client of the caller's (one pointed at a closed port, say); default: a new one. */
  redis: Redis;
  /** The key prefix for the token code. Default: this start's own. */
  prefix: string;
  /** The refresh-token secret; default: REFRESH_SECRET. Instances of one deployment share it. */
  refreshSecret: string;
  /** The token code under measurement; default: the learner's (or, with --solution, the reference). */
  createTokenService: (options: TokenServiceOptions) => TokenService;
}

export default defineLab<JwtLabConfig, JwtLabOptions>({
  config: z.object({
    ACCESS_TTL_SEC: wholeNumber({ fallback: TOKEN_DEFAULTS.accessTtlSec, min: 1, max: MAX_ACCESS_TTL_SEC }),
    // Every instance must share it (racing tabs get the same successor from any of them); absent or
    // empty: a random one per process, which is right for one instance only.
    REFRESH_SECRET: z
      .string()
      .optional()
      .transform((secret) => (secret === '' ? undefined : secret))
      .pipe(
        z
          .string()
          .min(
            MIN_REFRESH_SECRET_LENGTH,
            `must be at least ${MIN_REFRESH_SECRET_LENGTH} characters (openssl rand -base64 32 makes one)`,
          )
          .optional(),
      ),
  }),
  async build(context, options) {
    const accessTtlSec = options.accessTtlSec ?? context.config.ACCESS_TTL_SEC;
    const clockToleranceSec = options.clockToleranceSec ?? TOKEN_DEFAULTS.clockToleranceSec;
    // The JWKS lists a retired key as long as the token code trusts it: one access-token lifetime plus skew.
    const keys =
      options.keys ?? createKeyRing({ now: options.now, retiredKeyGraceMs: (accessTtlSec + clockToleranceSec) * 1000 });
    const users = options.users ?? (await createUserStore());
    const tokens = (options.createTokenService ?? createTokenService)({
      redis: options.redis ?? (await context.redis()),
      prefix: options.prefix ?? context.prefix,
      keys,
      now: options.now,
      accessTtlSec,
      refreshTtlSec: options.refreshTtlSec,
      clockToleranceSec,
      refreshSecret: options.refreshSecret ?? context.config.REFRESH_SECRET,
    });
    const app = createApp({
      tokens,
      users,
      keys,
      // The kit says it at most every 5 s: during an outage every request would otherwise log a line.
      onServiceDown: (line) => console.warn(`[jwt-refresh-tokens] ${line}`),
    });
    return {
      app,
      usage: (url) => {
        const [user] = DEMO_USERS;
        const login = JSON.stringify({ username: user.username, password: user.password });
        return [
          `Access tokens live ${accessTtlSec} s (ACCESS_TTL_SEC); signing key ${keys.current().kid} (RS256)`,
          ...(options.refreshSecret || context.config.REFRESH_SECRET
            ? []
            : [
                'Note: REFRESH_SECRET is not set, so refresh tokens are tagged with a secret of this process alone:',
                '      fine for one instance; instances behind one load balancer must share it.',
              ]),
          `Demo users: ${DEMO_USERS.map((u) => `${u.username} / "${u.password}"`).join(', ')}`,
          'Try:',
          `  TOKEN=$(curl -s -c jar.txt -H 'content-type: application/json' -d '${login}' ${url}/login | sed -E 's/.*"accessToken":"([^"]+)".*/\\1/')`,
          `  curl -s -H "authorization: Bearer $TOKEN" ${url}/me`,
          `  curl -si -b jar.txt -c jar.txt -X POST ${url}/refresh`,
          `  curl -si -H "authorization: Bearer $TOKEN" -X POST ${url}/logout`,
          `  curl -s ${url}/.well-known/jwks.json`,
        ];
      },
    };
  },
});
