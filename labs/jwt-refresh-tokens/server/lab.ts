/**
 * The JWT refresh tokens lab, described once: `lab serve`, the spec and the load script all start it
 * from here.
 */
import { createTokenService } from '#tokens';
import { defineLab, secretSetting, wholeNumber, z } from '@labs/lab-kit';
import { createApp } from './app.ts';
import { createKeyRing, type KeyRing } from './keys.ts';
import { TOKEN_DEFAULTS } from './token-defaults.ts';
import type { TokenService, TokenServiceOptions } from './token-service.ts';
import { createUserStore, DEMO_USERS, type UserStore } from './users.ts';

/** What a spec or load script may set instead of the configuration; the rest as TokenServiceOptions says. */
export interface JwtLabOptions
  extends Pick<TokenServiceOptions, 'redis' | 'prefix' | 'accessTtlSec' | 'refreshTtlSec' | 'clockToleranceSec'> {
  /**
   * A fake clock (epoch ms) for the tokens and, unless `keys` is given, the key ring. Without it the
   * token code reads the app server's clock for JWTs and Redis's clock for what it keeps in Redis.
   */
  now: () => number;
  /** The caller's key ring (a spec rotates it); default: a new one on `now`. */
  keys: KeyRing;
  /** The user store; default: the demo users (hashing them takes a moment, so a spec builds one). */
  users: UserStore;
  /** The refresh-token secret; default: REFRESH_SECRET. Instances of one deployment share it. */
  refreshSecret: string;
  /** The token code under measurement; default: the learner's (or, with --solution, the reference). */
  createTokenService: (options: TokenServiceOptions) => TokenService;
}

const config = z.object({
  // An access token that lives longer than a day is no longer short-lived; that is what refresh is for.
  ACCESS_TTL_SEC: wholeNumber({ fallback: TOKEN_DEFAULTS.accessTtlSec, min: 1, max: 86_400 }),
  // Every instance must share it (racing tabs get the same successor from any of them); absent or
  // empty: a random one per process (the token code's), which is right for one instance only.
  REFRESH_SECRET: secretSetting(),
});
export type JwtLabConfig = z.infer<typeof config>;

export default defineLab({
  config,
  async build(context, options: Partial<JwtLabOptions>) {
    const accessTtlSec = options.accessTtlSec ?? context.config.ACCESS_TTL_SEC;
    const clockToleranceSec = options.clockToleranceSec ?? TOKEN_DEFAULTS.clockToleranceSec;
    // The JWKS lists a retired key as long as the token code trusts it: one access-token lifetime plus skew.
    const keys =
      options.keys ?? createKeyRing({ now: options.now, retiredKeyGraceMs: (accessTtlSec + clockToleranceSec) * 1000 });
    const users = options.users ?? (await createUserStore());
    const tokens = (options.createTokenService ?? createTokenService)({
      ...options,
      redis: options.redis ?? (await context.redis()),
      prefix: options.prefix ?? context.prefix,
      keys,
      accessTtlSec,
      clockToleranceSec,
      refreshSecret: options.refreshSecret ?? context.config.REFRESH_SECRET,
    });
    return {
      app: createApp(tokens, users, keys),
      usage: (url) => {
        const { username, password } = DEMO_USERS[0];
        const login = JSON.stringify({ username, password });
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
