/**
 * The tokens a client connects with: the kit's signed tokens (`<payload>.<signature>`, an HMAC of
 * `{ sub, exp }`, like a JWT with HS256 without the header), under the names the hub uses.
 *
 * A browser's WebSocket API cannot set an Authorization header, so the client sends the token in the
 * query string (`/ws?token=...`). Query strings end up in access logs: keep tokens short-lived (a
 * ticket fetched over authenticated HTTP just before connecting), never a long-lived credential.
 */
import { verifySignedToken } from '@labs/lab-kit';

export {
  /** The user a token names, WITHOUT checking its signature or expiry: for logs, never for trust. */
  decodeSignedToken as decodeToken,
  /** A token saying `user`, valid for `ttlSec` (default TOKEN_TTL_SEC) from `now` (epoch ms). */
  issueSignedToken as issueToken,
  SIGNED_TOKEN_TTL_SEC as TOKEN_TTL_SEC,
} from '@labs/lab-kit';

/** Checks a token's signature and expiry; `reason` is safe to show the client. */
export function verifyToken(secret: string, token: string, now = Date.now()) {
  const verified = verifySignedToken(secret, token, now);
  return verified.ok ? { ok: true as const, user: verified.subject } : verified;
}
