/**
 * Small signed tokens: `<payload>.<signature>`, the payload base64url JSON `{ sub, exp }`, the
 * signature an HMAC-SHA256 of the payload part. The same idea as a JWT with HS256, without the
 * header; a lab whose lesson is tokens uses a JWT library (jose) instead. This is for the labs where a
 * token is plumbing: a ticket to open a WebSocket, a demo login, a signed link.
 *
 * Keep them short-lived: whoever holds one is its subject until it expires, and a token sent in a
 * query string (a browser's WebSocket cannot set headers) ends up in access logs.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** How long a token stays valid unless `issueSignedToken` is told otherwise: ten minutes. */
export const SIGNED_TOKEN_TTL_SEC = 600;

const sign = (secret: string, data: string) => createHmac('sha256', secret).update(data).digest('base64url');

/** A token saying `subject`, valid for `ttlSec` from `now` (epoch ms). */
export function issueSignedToken(
  secret: string,
  subject: string,
  options: { ttlSec?: number; now?: number } = {},
): string {
  const { ttlSec = SIGNED_TOKEN_TTL_SEC, now = Date.now() } = options;
  const data = Buffer.from(JSON.stringify({ sub: subject, exp: Math.floor(now / 1000) + ttlSec })).toString(
    'base64url',
  );
  return `${data}.${sign(secret, data)}`;
}

/** The payload of a token's first part, or undefined when it is not one. */
function readPayload(data: string): { sub: string; exp: number } | undefined {
  try {
    const { sub, exp } = JSON.parse(Buffer.from(data, 'base64url').toString('utf8'));
    return typeof sub === 'string' && sub !== '' && typeof exp === 'number' ? { sub, exp } : undefined;
  } catch {
    return undefined;
  }
}

/** Checks a token's signature, then its expiry (at `now`, epoch ms). `reason` is safe to show the client. */
export function verifySignedToken(
  secret: string,
  token: string,
  now = Date.now(),
): { ok: true; subject: string } | { ok: false; reason: string } {
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
  return { ok: true, subject: payload.sub };
}

/**
 * The subject a token names, WITHOUT checking its signature or expiry: for logs and debugging only.
 * Anyone can write a token that decodes to any subject; trusting this is the bug of every "decode,
 * don't verify" JWT mistake.
 */
export function decodeSignedToken(token: string): string | undefined {
  return readPayload(token.split('.')[0] ?? '')?.sub;
}
