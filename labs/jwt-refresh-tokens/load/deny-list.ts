/**
 * What instant revocation costs a JWT: a deny-list of token ids (`jti`) in Redis, checked on every
 * request, kept only until each token would have expired anyway. Wraps any TokenService.
 */
import type { Redis } from 'ioredis';
import { decodeJwt } from 'jose';
import { TokenError, type TokenService } from '../server/token-service.ts';

export function withDenyList(
  tokens: TokenService,
  redis: Redis,
  prefix: string,
  now: () => number = Date.now,
): TokenService {
  const key = (jti: string) => `${prefix}deny:${jti}`;
  return {
    ...tokens,
    async verifyAccess(accessToken) {
      const claims = await tokens.verifyAccess(accessToken);
      const { jti } = decodeJwt(accessToken);
      // The lookup a JWT was meant to avoid: now every request waits for Redis again.
      if (typeof jti === 'string' && (await redis.exists(key(jti))))
        throw new TokenError('revoked', 'This access token was revoked');
      return claims;
    },
    async logout(credentials) {
      await tokens.logout(credentials);
      if (!credentials.accessToken) return;
      const { jti, exp } = decodeJwt(credentials.accessToken);
      const ttlSec = Math.ceil((exp ?? 0) - now() / 1000);
      if (typeof jti === 'string' && ttlSec > 0) await redis.set(key(jti), '1', 'EX', ttlSec);
    },
  };
}
