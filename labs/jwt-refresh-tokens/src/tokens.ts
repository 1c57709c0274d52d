/**
 * STARTER: one signed JWT, the way many tutorials do it with jose. Log in, get a token, send it as
 * `Authorization: Bearer ...` until it expires; every request is checked with `jwtVerify`.
 *
 * It is stateless, which is its charm: the server checks a signature and remembers nothing. That is
 * also its flaw. When the token expires the user is logged out, however active they are; "refresh"
 * can only extend a token that is still valid; logout cannot take a token back. And `jwtVerify`
 * checks what it is asked to check: the signature and the times, and here nothing about who the token
 * is from, who it is for, or what kind of token it is.
 */
import { errors, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import { TOKEN_DEFAULTS } from '../server/token-defaults.ts';
import {
  TokenError,
  type AccessClaims,
  type Credentials,
  type IssuedTokens,
  type TokenService,
  type TokenServiceOptions,
} from '../server/token-service.ts';

export function createTokenService(options: TokenServiceOptions): TokenService {
  const { keys, now = Date.now } = options;
  const { issuer = TOKEN_DEFAULTS.issuer, audience = TOKEN_DEFAULTS.audience } = options;
  // TODO(lab): this one token is all the user has. When it expires they must type their password
  // again. A short-lived access token needs a long-lived partner the server can check (and revoke).
  const ttlSec = options.accessTtlSec ?? TOKEN_DEFAULTS.accessTtlSec;

  async function sign(userId: string): Promise<IssuedTokens> {
    const iat = Math.floor(now() / 1000);
    // TODO(lab): no `kid` in the header, so a verifier cannot tell which signing key made the token.
    const accessToken = await new SignJWT({})
      .setProtectedHeader({ alg: 'RS256' })
      .setSubject(userId)
      .setIssuer(issuer)
      .setAudience(audience)
      .setIssuedAt(iat)
      .setExpirationTime(iat + ttlSec)
      .sign(keys.current().privateKey);
    return { accessToken, expiresInSec: ttlSec };
  }

  async function verify(token: string): Promise<AccessClaims> {
    const currentDate = new Date(now());
    let lastError: unknown;
    // TODO(lab): every key we ever had still verifies. A retired key should stop working after a grace period.
    for (const key of keys.all()) {
      try {
        // TODO(lab): only the signature and the times are checked. A token signed with our key for
        // another API (`aud`), by another issuer (`iss`), or of another kind (an ID token: `typ`) passes.
        // jose checks each one you name in the options (and `algorithms`, which it otherwise takes
        // from the key: say it anyway).
        // TODO(lab): no clock tolerance. When this server's clock runs a few seconds ahead of the
        // signer's, tokens die early here; allow a little skew (jose: `clockTolerance`), not minutes.
        const { payload } = await jwtVerify(token, key.publicKey, { currentDate });
        return claimsOf(payload);
      } catch (error) {
        if (error instanceof errors.JWTExpired)
          throw new TokenError('expired', 'The access token has expired', { cause: error });
        lastError = error;
      }
    }
    throw new TokenError('invalid', 'The access token is not valid', { cause: lastError });
  }

  return {
    issue: sign,
    verifyAccess: verify,

    async refresh({ accessToken }: Credentials) {
      // TODO(lab): "refresh" re-signs a token that is still valid. An expired one cannot be refreshed,
      // and a stolen one can be refreshed forever.
      if (!accessToken) throw new TokenError('missing', 'Send the access token to refresh it');
      const claims = await verify(accessToken);
      return sign(claims.sub);
    },

    async logout({ accessToken }: Credentials) {
      if (!accessToken) throw new TokenError('missing', 'Send the access token to log out');
      await verify(accessToken);
      // TODO(lab): nothing to revoke. The client forgets its token; whoever copied it keeps a working one.
      // And a user who sat idle past `exp` cannot log out at all: an expired token is refused above.
    },
  };
}

function claimsOf(payload: JWTPayload): AccessClaims {
  if (typeof payload.sub !== 'string' || typeof payload.exp !== 'number') {
    throw new TokenError('invalid', 'The access token lacks a subject or an expiry');
  }
  return { sub: payload.sub, exp: payload.exp };
}
