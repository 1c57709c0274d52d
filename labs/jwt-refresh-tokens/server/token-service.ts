/**
 * The contract the token code implements: the starter (src/tokens.ts) and the reference
 * (solution/tokens.ts). The routes in server/app.ts only ever talk to this; the defaults are in
 * server/token-defaults.ts. The learner does not edit it.
 */
import type { Redis } from 'ioredis';
import type { KeyRing } from './keys.ts';

export interface TokenServiceOptions {
  /** Shared Redis connection, for whatever the server must remember. The starter remembers nothing. */
  redis: Redis;
  /** Prefix for every Redis key, so tests and apps never collide. */
  prefix: string;
  /** The RS256 signing keys, newest first. */
  keys: KeyRing;
  /**
   * A clock in epoch ms, given by a spec that moves time without waiting. When it is given, use it for
   * every time decision (jose: `currentDate`). When it is not, JWTs use this server's clock (verifiers
   * allow for skew), and what you keep in Redis (expiry, the racing-tabs grace) uses Redis's clock
   * (`TIME` inside a script), the one clock every app server shares.
   */
  now?: () => number;
  /** Lifetime of an access token, in seconds. */
  accessTtlSec?: number;
  /** Lifetime of a refresh token, in seconds; each rotation starts a new one. */
  refreshTtlSec?: number;
  /** How far a verifier's clock may disagree with the signer's, in seconds. */
  clockToleranceSec?: number;
  /** How long a retired signing key still verifies tokens, in seconds. */
  keyGraceSec?: number;
  /** How long a just-rotated refresh token still answers with its successor, for racing tabs, in ms. */
  refreshRaceGraceMs?: number;
  /** Server-side secret for deriving refresh tokens. Every instance needs the same one. */
  refreshSecret?: string;
  /** The `iss` claim: who issued the token. */
  issuer?: string;
  /** The `aud` claim: which API it is for. */
  audience?: string;
}

/** What a client may present: the access token (Authorization: Bearer) and/or the refresh cookie. */
export interface Credentials {
  accessToken?: string;
  refreshToken?: string;
}

/** Tokens handed to a client after login or refresh. */
export interface IssuedTokens {
  accessToken: string;
  /** Seconds until the access token expires. */
  expiresInSec: number;
  /** Opaque refresh token for the cookie; absent when the implementation has none. */
  refreshToken?: string;
  /** Seconds until the refresh token expires. */
  refreshExpiresInSec?: number;
}

/** What a verified access token says. */
export interface AccessClaims {
  /** The user id. */
  sub: string;
  /** The session (refresh-token family) the token belongs to, when there is one. */
  sid?: string;
  /** Expiry, epoch seconds. */
  exp: number;
}

export type TokenErrorCode = 'missing' | 'invalid' | 'expired' | 'revoked' | 'reused';

/** Any reason to refuse a token. The routes turn it into a 401; `code` goes into the body. */
export class TokenError extends Error {
  readonly code: TokenErrorCode;
  constructor(code: TokenErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'TokenError';
    this.code = code;
  }
}

export interface TokenService {
  /** After a correct password: a new session for `userId`. */
  issue(userId: string): Promise<IssuedTokens>;
  /** The claims of a valid access token; throws TokenError otherwise. */
  verifyAccess(accessToken: string): Promise<AccessClaims>;
  /** New tokens for the same session; throws TokenError when the session cannot continue. */
  refresh(credentials: Credentials): Promise<IssuedTokens>;
  /** Ends the session the credentials belong to; throws TokenError when they prove no session. */
  logout(credentials: Credentials): Promise<void>;
}
