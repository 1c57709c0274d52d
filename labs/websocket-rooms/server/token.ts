/**
 * Small signed tokens: `<payload>.<signature>`, the payload base64url JSON `{ sub, exp }`, the
 * signature an HMAC-SHA256 of the payload part. The same idea as a JWT with HS256, without the header;
 * a service that already speaks JWT would use its JWT library (jose) here instead.
 *
 * A browser's WebSocket API cannot set an Authorization header, so the client sends the token in the
 * query string (`/ws?token=...`). Query strings end up in access logs: keep tokens short-lived (a
 * ticket fetched over authenticated HTTP just before connecting), never a long-lived credential.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** How long an issued token stays valid by default. */
export const TOKEN_TTL_SEC = 600;

interface Payload {
  sub: string;
  /** Expiry, epoch seconds. */
  exp: number;
}

const sign = (secret: string, data: string) => createHmac('sha256', secret).update(data).digest('base64url');

/** A token saying `user`, valid for `ttlSec` from `now` (epoch ms). */
export function issueToken(secret: string, user: string, options: { ttlSec?: number; now?: number } = {}): string {
  const { ttlSec = TOKEN_TTL_SEC, now = Date.now() } = options;
  const payload: Payload = { sub: user, exp: Math.floor(now / 1000) + ttlSec };
  const data = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${data}.${sign(secret, data)}`;
}

/** The payload of a token whose signature checked out, or undefined. */
function readPayload(data: string): Payload | undefined {
  try {
    const payload = JSON.parse(Buffer.from(data, 'base64url').toString('utf8')) as Partial<Payload>;
    if (typeof payload.sub !== 'string' || payload.sub.length === 0 || typeof payload.exp !== 'number')
      return undefined;
    return { sub: payload.sub, exp: payload.exp };
  } catch {
    return undefined;
  }
}

/** Checks a token's signature and expiry. `reason` is safe to show the client. */
export function verifyToken(
  secret: string,
  token: string,
  now = Date.now(),
): { ok: true; user: string } | { ok: false; reason: string } {
  const [data, signature, extra] = token.split('.');
  if (!data || !signature || extra !== undefined) return { ok: false, reason: 'the token is malformed' };
  const expected = Buffer.from(sign(secret, data));
  const given = Buffer.from(signature);
  // Constant time: comparing byte by byte and stopping early would tell an attacker how much was right.
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    return { ok: false, reason: 'the token signature does not match' };
  }
  const payload = readPayload(data);
  if (!payload) return { ok: false, reason: 'the token is malformed' };
  if (payload.exp * 1000 <= now) return { ok: false, reason: 'the token has expired' };
  return { ok: true, user: payload.sub };
}

/**
 * The user a token names, WITHOUT checking its signature or expiry: for logs and debugging only.
 * Anyone can write a token that decodes to any user; trusting this is the bug of every "decode, don't
 * verify" JWT mistake.
 */
export function decodeToken(token: string): string | undefined {
  return readPayload(token.split('.')[0] ?? '')?.sub;
}
